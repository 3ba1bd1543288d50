#!/usr/bin/env bash
# Reproduce the shipped sample SteerNPC model (samples/models/steernpc-npc-lora) with the
# project's own toolkit, on CPU. Steps resume where they stopped if interrupted.
#
#   samples/pipeline/sample_model.sh [WORK_DIR]      (default runs/sample)
#
# corpus (base-model replies to this project's player lines, for every sample persona,
# sampled under random style instructions) -> 1. APM -> 2. annotate (quantile-calibrated)
# -> 3. LoRA SFT in the nemo format, many exchanges per persona card -> 4. bootstrap round
# -> steerability report on held-out player lines, with the untuned base as baseline.
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-runs/sample}
mkdir -p "$W"

echo "== corpus: SmolLM2 replies to samples/data/player_lines.txt for every persona"
python samples/pipeline/npc_corpus.py --out "$W/npc_corpus.jsonl" --per-line 2 --max-new-tokens 72
python samples/pipeline/augment_lengths.py "$W/npc_corpus.jsonl" "$W/npc_corpus_aug.jsonl"

echo "== step 1a: APM on chitchat's human labels (reported; reply-level signal only for verbosity)"
[ -f "$W/apm_chitchat/apm.json" ] || steernpc train apm --schema npc --data chitchat --input reply \
  --epochs 3 --max-examples 12000 --max-length 64 --freeze-backbone --out "$W/apm_chitchat"

echo "== step 1b: APM on the corpus' style labels (the one used to annotate and to judge)"
python samples/pipeline/style_labels.py "$W/npc_corpus_aug.jsonl" "$W/style_labelled.jsonl"
[ -f "$W/apm_style/apm.json" ] || steernpc train apm --schema npc --data "$W/style_labelled.jsonl" --input reply \
  --epochs 20 --max-length 96 --freeze-backbone --out "$W/apm_style"

echo "== step 2: annotate the corpus with the APM, calibrated so every level 0-4 is equally common"
steernpc annotate "$W/npc_corpus_aug.jsonl" "$W/npc_annotated.jsonl" --apm "$W/apm_style" --to npc --calibrate
# nemo trains every reply of a conversation, each under its own label line: chaining the
# exchanges of one persona reads its ~230-token card once per ~8 labelled replies
python samples/pipeline/conversations.py "$W/npc_annotated.jsonl" "$W/npc_conversations.jsonl" --exchanges 24

echo "== step 3: attribute-conditioned LoRA SFT (nemo format: the label line sits right before each reply)"
# 3a: plain SFT (lr 8e-4); 3b: continue with 5x loss weight on each end-of-turn marker
steernpc train sft --base smollm2 --data "$W/npc_conversations.jsonl" --format nemo --schema npc --lora 16 \
  --max-steps 180 --precision bf16 --lr 8e-4 --save-minutes 10 --out "$W/sft_a"
steernpc train sft --base smollm2 --init-adapter "$W/sft_a" --data "$W/npc_conversations.jsonl" --format nemo --schema npc \
  --end-weight 5 --max-steps 180 --precision bf16 --lr 6e-4 --warmup 0.02 --save-minutes 10 --out "$W/sft"

echo "== step 4: bootstrap round (sample under drawn targets, annotate with the calibrated APM, train round 2)"
steernpc train bootstrap --base smollm2 --adapter "$W/sft" --apm "$W/apm_style" --personas samples/personas \
  --prompts samples/data/player_lines.txt --samples 4 --max-new-tokens 64 --batch-size 16 \
  --end-weight 5 --max-steps 30 --lr 3e-4 --precision bf16 --out "$W/bootstrap"

echo "== steerability report on held-out player lines, and the untuned base as the baseline row"
for model in sft bootstrap/round2; do
  steernpc eval steerability --model smollm2 --adapter "$W/$model" --apm "$W/apm_style" --batch-size 16 \
    --personas samples/personas --prompts samples/data/player_lines_heldout.txt --max-personas 3 --max-prompts 8 --max-new-tokens 60 --out "$W/report_${model//\//_}"
done
steernpc eval steerability --model smollm2 --format nemo --apm "$W/apm_style" --batch-size 16 \
  --personas samples/personas --prompts samples/data/player_lines_heldout.txt --max-personas 3 --max-prompts 8 --max-new-tokens 60 --out "$W/report_base"

echo "== ship the better of round 1 and round 2 by the reports (round 1 this time; see the model card) in fp16"
python samples/pipeline/ship_adapter.py "$W/sft" samples/models/steernpc-npc-lora
