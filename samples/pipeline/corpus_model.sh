#!/usr/bin/env bash
# The sample model from the project's hand-written NPC corpus (samples/corpus), on CPU.
# Every step resumes where it stopped (run the same command again); progress bars on each.
#
#   samples/pipeline/corpus_model.sh [WORK_DIR]        (default runs/corpus)
#   SFT_STEPS=129 samples/pipeline/corpus_model.sh      (step 3b a full epoch; default 90 steps, ~0.7 epoch, as shipped)
#
# 1. APM on the corpus, evaluated on the 8 held-out personas (never in its training data)
# 3. LoRA SFT: each contrast set shares one prefix, and every reply is also scored under
#    labels with one attribute moved (the label-contrast term); first in the nemo format
#    (digits, 47 steps: the previous shipped adapter), then continued in the verbal format
#    (the same template with the level words of the schema in the label line)
# -> steerability report: held-out personas x held-out lines, every attribute swept 0..4,
#    sampled with several seeds; the untuned base as the baseline row
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-runs/corpus}
mkdir -p "$W"
C=samples/corpus
SCHEMA=samples/attributes/npc.yaml

echo "== step 1: APM on the corpus replies, held out by persona"
[ -f "$W/apm/apm.json" ] || steernpc train apm --schema $SCHEMA --data $C/dialogue/*.jsonl --eval $C/eval/*.jsonl \
  --input reply --epochs 4 --max-length 96 --batch-size 32 --out "$W/apm"

echo "== step 3a: attribute-conditioned LoRA SFT (nemo digits) with shared prefixes and the label-contrast term"
steernpc train sft --base smollm2 --format nemo --schema $SCHEMA --personas $C/personas/train --data $C/dialogue/*.jsonl \
  --contrast-weight 1.0 --end-weight 3 --lora 32 --max-length 1280 --micro-batch 1 --grad-accum 8 \
  --max-steps ${SFT_A_STEPS:-47} --epochs 1 --precision bf16 --lr 6e-4 --save-minutes 10 --out "$W/sft_nemo"

echo "== step 3b: continue in the verbal format (level words in the label line), a stronger label-contrast term"
steernpc train sft --base smollm2 --format verbal --schema $SCHEMA --personas $C/personas/train --data $C/dialogue/*.jsonl \
  --init-adapter "$W/sft_nemo" --contrast-weight 2.0 --end-weight 3 --lora 32 --max-length 1280 --micro-batch 1 --grad-accum 8 \
  --max-steps ${SFT_STEPS:-90} --epochs 1 --precision bf16 --lr 6e-4 --seed 1 --save-minutes 10 --out "$W/sft"

echo "== steerability on held-out personas x held-out lines (sampled, 2 samples each) through the runtime's engine:"
echo "   the adapter plain and with guidance 2.5, and the untuned base"
for run in sft:1 sft:2.5 base:1; do
  model=${run%%:*} g=${run##*:}
  adapter=(--adapter "$W/$model"); [ $model = base ] && adapter=(--format verbal)
  [ -f "$W/report_${model}_g$g/report.json" ] || steernpc eval steerability --model smollm2 "${adapter[@]}" --apm "$W/apm" \
    --personas $C/personas/heldout --prompts $C/lines/heldout.txt --max-personas 8 --max-prompts 3 \
    --temperature 0.7 --samples 2 --max-new-tokens 96 --batch-size 16 --backend torch --guidance $g --out "$W/report_${model}_g$g"
done

echo "== label margins and perplexity on the held-out corpus replies (no generation, no APM)"
for model in sft base; do
  adapter=(--adapter "$W/$model"); [ $model = base ] && adapter=()
  [ -f "$W/margin_$model.json" ] || python samples/pipeline/label_margin.py "${adapter[@]}" --format verbal --max-replies 40 --out "$W/margin_$model.json"
done
echo "blind pairs for a reader: python samples/pipeline/blind_pairs.py make $W/report_sft_g1 $W/pairs_sft"
