# ARM (Raspberry Pi-class) cross-check under qemu-user. Include from the top-level Makefile:
#     include arm/arm.mk
# or run on its own:  make -f arm/arm.mk test-arm [EXPORT=export]
#
# test-arm     build/refresh the aarch64 sysroot (cached), run every model of $(EXPORT) on this
#              host, on emulated Cortex-A72 (Pi 4) and Cortex-A76 (Pi 5), and on an emulated
#              Haswell (AVX2), then compare: static int8 bit-exact, fp32 <= 1e-6, dynamic int8
#              reported, `edgevae sample` PNG identical. Without models in $(EXPORT) a fixture
#              export with random weights is used. Last line: summary, PASS/FAIL.
# arm-sysroot  only build/refresh build/arm/sysroot
# arm-clean    remove build/arm (sysroot, wheel and apt caches, results)

ARM_DIR    := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
ARM_PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
EXPORT     ?= export
ARM_TARGETS ?= cortex-a72,cortex-a76,haswell

.PHONY: test-arm arm-sysroot arm-clean

test-arm:
	$(ARM_PYTHON) $(ARM_DIR)/run_check.py --export-dir $(EXPORT) --targets $(ARM_TARGETS)

arm-sysroot:
	$(ARM_PYTHON) $(ARM_DIR)/build_sysroot.py

arm-clean:
	rm -rf build/arm
