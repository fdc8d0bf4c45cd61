#!/usr/bin/env bash
# Ours beside the official stylegan2-ada-pytorch on one GPU, one device run: sec/kimg and peak memory at cfg=cpu
# 32 and 64 px and paper256 at 256 px, two alternating pairs each (bench/train_speed.py --official).
# The official tree travels inside the checkout, ignored by git; here, in the repository root:
#   echo /.official/ >> .git/info/exclude; cp -r PATH/TO/stylegan2-ada-pytorch .official
# then on the device (carry .official):  bash bench/device_vs_official.sh   (log under $OUT)
set -u
OUT=${OUT:-/tmp/spinegan_device}
OFFICIAL=${OFFICIAL:-.official}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SPINEGAN_OPS_CACHE_DIR=/tmp/spinegan_ops MAX_JOBS=16
[ -f "$OFFICIAL/training/networks.py" ] || { echo "no official checkout at $OFFICIAL"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/vs_official.log"
for args in '--cfg cpu --res 32 --batch 16' '--cfg cpu --res 64 --batch 16' '--cfg paper256 --res 256 --batch 32'; do
    echo "=== $args" | tee -a "$OUT/vs_official.log"
    timeout 170 python3 bench/train_speed.py --device cuda --steps 20 --warmup 5 --repeat 2 --official "$OFFICIAL" \
        $args 2>&1 | tail -4 | tee -a "$OUT/vs_official.log"
done
