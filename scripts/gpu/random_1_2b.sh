# Sourced by the scripts in scripts/gpu/ that measure a random-weight EXAONE-4.0-1.2B-shaped
# checkpoint (after setup.sh, so from the repository root): HF transformers writes it (bf16,
# seed 0, the shape of scripts/gpu_parity.py's CFG) to $RANDOM_1_2B, .gpu/random-1.2b unless set: a
# path relative to the repository root (and ignored by git), so reports name it by role, not as a
# path of the GPU machine.
RANDOM_1_2B="${RANDOM_1_2B:-.gpu/random-1.2b}"
python3 scripts/random_12b.py "$RANDOM_1_2B"
