#!/usr/bin/env bash
# One GPU session, run once (15 min of device time in all): build and check the fused ops against the
# reference, run the GPU tests, time training (beside the official stylegan2-ada-pytorch when its checkout is
# at $OFFICIAL: sec/kimg and peak memory, two alternating pairs each), and train a short fp16 run whose
# snapshot comes back to $OUT.
#   bash bench/device_check.sh        (on a CUDA machine; results and logs under $OUT)
# The official tree travels inside the checkout, ignored by git; here, in the repository root:
#   echo /.official/ >> .git/info/exclude; cp -r PATH/TO/stylegan2-ada-pytorch .official   (then carry .official)
set -u
OUT=${OUT:-/tmp/spinegan_device}
OFFICIAL=${OFFICIAL:-.official}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SPINEGAN_OPS_CACHE_DIR=/tmp/spinegan_ops MAX_JOBS=16
step() { echo; echo "=== $1"; }

step 'machine'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

step 'fused ops: build, accuracy, timing'
timeout 300 python3 bench/gpu_ops_check.py 2>&1 | tee "$OUT/gpu_ops_check.log"

step 'GPU tests'
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/torch_utils 2>&1 | tail -4 | tee "$OUT/gpu_tests.log"

step 'training speed (sec/kimg, peak memory)'
if [ -f "$OFFICIAL/training/networks.py" ]; then beside="--official $OFFICIAL --repeat 2"; else beside=''; fi
for args in '--cfg cpu --res 32 --batch 16' '--cfg cpu --res 64 --batch 16' '--cfg paper256 --res 256 --batch 32'; do
    echo "=== $args" | tee -a "$OUT/train_speed.log"
    timeout 170 python3 bench/train_speed.py --device cuda --steps 20 --warmup 5 $beside $args 2>&1 | tail -4 \
        | tee -a "$OUT/train_speed.log"
done

step 'short conditional fp16 training run, then a resume from its middle snapshot'
small='--cfg cpu --channel-base 2048 --channel-max 64'  # Small enough for the snapshot to come back from $OUT.
timeout 60 python3 dataset_tool.py --source phantom:512 --resolution 64 --dest /tmp/phantom64.zip 2>&1 | tail -3
timeout 150 python3 train.py --outdir /tmp/runs --data /tmp/phantom64.zip $small --cond 1 --aug ada \
    --kimg 1 --tick 0.25 --snap 2 --device cuda --workers 2 2>&1 | grep '^tick\|Error' | tee "$OUT/train.log"
run_dir=$(ls -d /tmp/runs/0* | tail -1)
cp "$run_dir"/stats.jsonl "$run_dir"/fakes_init.png "$OUT"/
middle=$(ls "$run_dir"/network-snapshot-*.pkl | head -2 | tail -1)
timeout 120 python3 train.py --outdir /tmp/runs --data /tmp/phantom64.zip $small --cond 1 --aug ada \
    --kimg 1 --tick 0.25 --snap 2 --device cuda --workers 2 --resume "$middle" 2>&1 | grep '^tick\|Error\|Resum' | tee -a "$OUT/train.log"
cp "$(ls "$run_dir"/network-snapshot-*.pkl | tail -1)" "$OUT/gpu_snapshot.pkl"
timeout 60 python3 generate.py --network "$OUT/gpu_snapshot.pkl" --seeds 0-7 --class abnormal --grid --outdir /tmp/gen 2>&1 | tail -1
ls -la "$OUT"
