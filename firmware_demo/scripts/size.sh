#!/bin/sh
# size.sh NAME SIZE_TOOL OBJDIR PROGRAM RUN
# Print one size line: kernel code/RAM, model bytes, whole-program flash/RAM and stack use.
# RUN is the command that runs the firmware (it prints "stack: N bytes" and, for weights with
# the score, "score stack: N bytes"), or "static" to take the deepest kernel call chains from
# -fstack-usage (.su) files instead.
name=$1 size=$2 dir=$3 prog=$4 run=$5

sections() { # sum section sizes of $1 by class: text rodata data bss
    $size -A "$1" | awk '
        $1 ~ /^\.text/ || $1 ~ /^\.init$/ || $1 ~ /^\.fini$/ || $1 ~ /^\.plt/ { t += $2 }
        $1 ~ /^\.rodata/ || $1 ~ /^\.ARM\.exidx/ || $1 ~ /^\.eh_frame/ { r += $2 }
        $1 ~ /^\.data/ || $1 ~ /^\.got/ || $1 ~ /^\.init_array/ || $1 ~ /^\.fini_array/ { d += $2 }
        $1 ~ /^\.bss/ || $1 ~ /^\.tbss/ { b += $2 }
        END { printf "%d %d %d %d\n", t, r, d, b }'
}

set -- $(sections "$dir/edgevae_kernel.o"); k_text=$1 k_ro=$2 k_data=$3 k_bss=$4
set -- $(sections "$dir/edgevae_weights.o"); m_ro=$(( $1 + $2 + $3 ))
set -- $(sections "$prog"); p_flash=$(( $1 + $2 + $3 )) p_ram=$(( $3 + $4 ))

if [ "$run" = static ]; then
    # edgevae_decode -> edgevae_decode_q -> ev_decoder -> ev_layer (-> ev_dot_block), or
    # edgevae_quantize_z; edgevae_score -> edgevae_score_parts -> ev_encoder/ev_decoder -> ...
    set -- $(awk -F'\t' '{ split($1, a, ":"); s[a[4]] = $2 }
        END {
            layer = s["ev_layer"] + s["ev_dot_block"] + s["ev_requantize_exact"]
            q = s["edgevae_decode"] + s["edgevae_decode_q"] + s["ev_decoder"] + layer
            z = s["edgevae_decode"] + s["edgevae_quantize_z"]
            sc = 0
            if ("edgevae_score_parts" in s) {
                sc = s["edgevae_score"] + s["edgevae_score_parts"] + layer
                sc += (s["ev_encoder"] > s["ev_decoder"] ? s["ev_encoder"] : s["ev_decoder"])
            }
            print (q > z ? q : z), sc
        }' "$dir/edgevae_kernel.su")
    stack=$1 score_stack=$2
    how="static"
else
    out=$($run)
    stack=$(printf '%s\n' "$out" | sed -n 's/^stack: \([0-9]*\) bytes.*/\1/p')
    score_stack=$(printf '%s\n' "$out" | sed -n 's/^score stack: \([0-9]*\) bytes.*/\1/p')
    how="measured"
fi
extra=""
if [ -n "$score_stack" ] && [ "$score_stack" != 0 ]; then
    extra=", score stack $score_stack B"
fi
printf '%-11s kernel code %5d B, kernel const %4d B, kernel RAM %5d B, model %7d B | stack %4s B (%s)%s | program flash %7d B, RAM %6d B\n' \
    "$name" "$k_text" "$k_ro" $(( k_data + k_bss )) "$m_ro" "$stack" "$how" "$extra" "$p_flash" "$p_ram"
