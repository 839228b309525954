"""Bad input, through the real ``lindit`` entry point: exit code 2, one line on stderr that names the bad value,
no traceback, nothing written, and (the table runs in seconds) no long work before the error.

Each row is ``(command line, fragment the error line must contain)``; ``{name}`` fields are paths made by the
``paths`` fixture. docs/RELIABILITY.md lists what these rows hold lindit to.
"""

import json
import shlex
import time

import pytest
import torch
import yaml
from reliability_helpers import billion_laughs, write_recipe

from lindit.cli import main
from lindit.world.teachers import teacher_dir

PX = "--model {student} --base builtin:pixart --prompt a --steps 1"
CASES = [
    # ------------------------------------------------------------------ lindit (top level)
    ("nosuch", "invalid choice: 'nosuch'"),
    ("convert --nosuch-flag 1", "unrecognized arguments: --nosuch-flag"),
    ("bench nosuch", "invalid choice: 'nosuch'"),
    # ------------------------------------------------------------------ convert
    ("convert", "--teacher and --out are required"),
    ("convert --teacher {teacher}", "--teacher and --out are required"),
    ("convert --teacher /nonexistent/dir --out {new}", "no model at '/nonexistent/dir'"),
    ("convert --teacher relative/deeper/missing --out {new}", "no model at 'relative/deeper/missing'"),
    ("convert --teacher builtin:nosuch --out {new}", "no built-in teacher 'nosuch'"),
    ("convert --teacher {teacher} --out {existing}", "already exists"),
    ("convert --teacher {teacher} --out ''", "--out: must not be empty"),
    ("convert --teacher {teacher} --out /dev/null", "/dev/null exists and is not a folder"),
    ("convert --teacher {teacher} --out {file}", "is not a folder"),
    ("convert --teacher {teacher} --out {file}/sub", "is a file, not a folder"),
    ("convert --teacher {teacher} --method nosuch --out {new}", "unknown method 'nosuch'"),
    ("convert --teacher {teacher} --method mm_edit --out {new}", "'mm_edit' does not fit PixArtTransformer2DModel"),
    ("convert --teacher builtin:mmdit --method edit --out {new}", "'edit' does not fit SD3Transformer2DModel"),
    ("convert --teacher {teacher} --method lit --option heads=abc --out {new}", "heads='abc'"),
    ("convert --teacher {teacher} --method lit --option heads=0 --out {new}", "heads=0"),
    ("convert --teacher {teacher} --method lit --option value_conv=4 --out {new}", "value_conv=4"),
    ("convert --teacher {teacher} --method kv_compress --option factor=0 --out {new}", "factor=0"),
    ("convert --teacher {teacher} --method kv_compress --option factor=1 --out {new}", "factor=1"),
    ("convert --teacher {teacher} --method kv_compress --option factor=2.5 --out {new}", "factor=2.5"),
    ("convert --teacher builtin:mmdit --method mm_edit --option eta=bogus --out {new}", "eta='bogus'"),
    ("convert --teacher builtin:mmdit --method mm_edit --option eta=1.5 --out {new}", "eta=1.5"),
    ("convert --teacher builtin:mmdit --method mm_edit --option softmax_qk=soft --out {new}", "softmax_qk='soft'"),
    ("convert --teacher {teacher} --method edit --option eta=0.5 --out {new}", "unknown option(s) ['eta']"),
    ("convert --teacher {teacher} --option cf_reduction=0 --out {new}", "cf_reduction=0"),
    ("convert --teacher {teacher} --option sc_stride=0 --out {new}", "sc_stride=0"),
    ("convert --teacher {teacher} --option cf_negative_slope=nan --out {new}", "cf_negative_slope='nan'"),
    ("convert --teacher {teacher} --method sana --option mlp_ratio=-1 --out {new}", "mlp_ratio=-1"),
    ("convert --teacher {teacher} --method linfusion --option lf_mid_dim=0 --out {new}", "lf_mid_dim=0"),
    ("convert --teacher {teacher} --option bogus=1 --out {new}", "unknown option(s) ['bogus']"),
    ("convert --teacher {teacher} --option noequals --out {new}", "KEY=VALUE, got 'noequals'"),
    ("convert --teacher {teacher} --layers 99 --out {new}", "layers [99] out of range"),
    ("convert --teacher {teacher} --layers -1 --out {new}", "layers=[-1]"),
    ("convert --teacher {teacher} --layers x --out {new}", "invalid int value: 'x'"),
    ("convert --teacher {teacher} --inherit xyz --out {new}", "got 'xyz'"),
    ("convert --teacher {empty} --out {new}", "has no diffusers config.json"),
    ("convert --teacher {file} --out {new}", "has no diffusers config.json"),
    ("convert --teacher {noweights} --out {new}", "no weights (*.safetensors)"),
    ("convert --teacher {truncated} --out {new}", "is not a loadable diffusers model"),
    ("convert --teacher {student} --out {new}", "already converted"),
    # ------------------------------------------------------------------ distill
    ("distill --config /nonexistent.yaml --out {new}", "config /nonexistent.yaml does not exist"),
    ("distill --config {listyaml} --out {new}", "expected a mapping, got list"),
    ("distill --config {brokenyaml} --out {new}", "is not valid YAML"),
    ("distill --config {bomb} --out {new}", "expand to more than 100,000 values"),
    ("distill --config {selfref} --out {new}", "contains it"),
    ("distill --config {recipe} --out {new} stages[0].lr=.inf", "stages[0].lr: expected a finite number, got float inf"),
    ("distill --config {recipe} --out {new} stages[0].lr=.nan", "stages[0].lr: expected a finite number"),
    ("distill --config {recipe} --out {new} stages[0].lr=nan", "stages[0].lr: expected a finite number, got 'nan'"),
    ("distill --config {recipe} --out {new} stages[0].lr=-1", "lr must be positive"),
    ("distill --config {recipe} --out {new} stages[0].lr=1e40", "stages[0].lr: at most 1e+06"),
    ("distill --config {recipe} --out {new} stages[0].steps=0", "steps, resolution and lr must be positive"),
    ("distill --config {recipe} --out {new} stages[0].steps=2.5", "stages[0].steps: expected int, got float 2.5"),
    ("distill --config {recipe} --out {new} stages[0].resolution=20", "20 is not a multiple of data.bucket_multiple"),
    ("distill --config {recipe} --out {new} stages[9].lr=1", "stages[9].lr: index 9 out of range"),
    ("distill --config {recipe} --out {new} nosuch=1", "nosuch: unknown key"),
    ("distill --config {recipe} --out {new} noequals", "override 'noequals'"),
    ("distill --config {recipe} --out {new} recipe=nosuch", "recipe: expected one of"),
    ("distill --config {recipe} --out {new} --max-steps 0", "--max-steps: must be a positive integer, got '0'"),
    ("distill --config {recipe} --out {new} --resume /nonexistent", "checkpoint /nonexistent does not exist"),
    ("distill --config {recipe} --out {new} --resume {empty}", "is not a complete lindit checkpoint"),
    ("distill --config {recipe} --out {new} --accept-config-changes", "--accept-config-changes applies to --resume"),
    ("distill --config {recipe} --out ''", "--out: must not be empty"),
    ("distill --config {recipe} --out /dev/null", "/dev/null exists and is not a folder"),
    ("distill --config {recipe} --out {file}", "is not a folder"),
    ("distill --config {recipe} --out {existing}", "already holds files"),
    ("distill --config {recipe} --out {existing} --resume latest", "is not a lindit run folder"),
    ("distill --config {recipe} --out {run}", "already holds a run"),
    ("distill --config {recipe} --out {run} --resume latest seed=3", "seed: 0 -> 3"),
    ("distill --config {recipe} --out {run} --resume latest stages[0].steps=9", "stages[0].steps: 4 -> 9"),
    ("distill --config {recipe} --out {new} model.method=nosuch", "unknown method 'nosuch'"),
    ("distill --config {recipe} --out {new} model.convert.heads=abc", "unknown option(s) ['heads']"),
    ("distill --config {recipe} --out {new} model.convert.cf_reduction=0", "cf_reduction=0"),
    ("distill --config {recipe} --out {new} model.teacher=/nonexistent", "model.teacher: no model folder"),
    ("distill --config {recipe} --out {new} model.teacher.random.class=Nope", "random model class 'Nope'"),
    ("distill --config {recipe} --out {new} data.batch_size=0", "data.batch_size: must be >= 1, got 0"),
    ("distill --config {recipe} --out {new} data.caption_dropout=1.5", "data.caption_dropout: must be in [0, 1)"),
    ("distill --config {recipe} --out {new} data.source.world=null data.source.folder=/nonexistent",
     "data.source.folder: /nonexistent does not exist"),
    ("distill --config {recipe} --out {new} data.source.world=null data.source.cache=/nonexistent",
     "data.source.cache: /nonexistent does not exist"),
    ("distill --config {recipe} --out {new} model.base=/nonexistent", "model.base: no model folder '/nonexistent'"),
    ("distill --config {recipe} --out {new} recipe=finetune model.teacher=null model.student.lindit=/nonexistent",
     "model.student.lindit: /nonexistent is not a lindit student folder"),
    ("distill --config {recipe} --out {new} optimizer.betas=[2,3]", "optimizer.betas: two numbers in [0, 1)"),
    ("distill --config {recipe} --out {new} optimizer.eps=0", "optimizer.eps: must be > 0"),
    ("distill --config {recipe} --out {new} optimizer.weight_decay=-1", "optimizer.weight_decay: must be >= 0"),
    ("distill --config {recipe} --out {new} optimizer.weight_decay=.inf", "optimizer.weight_decay: expected a finite"),
    ("distill --config {recipe} --out {new} optimizer.warmup_steps=-1", "optimizer.warmup_steps: must be >= 0"),
    ("distill --config {recipe} --out {new} optimizer.schedule=nosuch", "unknown learning-rate schedule 'nosuch'"),
    ("distill --config {recipe} --out {new} training.max_grad_norm=-1", "training.max_grad_norm: must be > 0"),
    ("distill --config {recipe} --out {new} training.max_nonfinite_steps=-1", "max_nonfinite_steps: must be >= 0"),
    ("distill --config {recipe} --out {new} training.mixed_precision=fp8", "training.mixed_precision: expected one of"),
    ("distill --config {recipe} --out {new} seed=-1", "seed: must be in [0, 2**32)"),
    ("distill --config {recipe} --out {new} ema.decay=1.5", "ema.decay: must be in (0, 1)"),
    ("distill --config {recipe} --out {new} checkpointing.keep=0", "checkpointing.keep: must be >= 1"),
    # ------------------------------------------------------------------ cache
    ("cache --config /nonexistent.yaml --out {new}", "config /nonexistent.yaml does not exist"),
    ("cache --config {recipe}", "--out is required"),
    ("cache --config {recipe} --out ''", "--out: must not be empty"),
    ("cache --config {recipe} --out {new} --batch-size 0", "--batch-size: must be a positive integer"),
    ("cache --config {recipe} --out {new} --shard-size 0", "--shard-size: must be a positive integer"),
    ("cache --config {recipe} --out {new} --resolution 0", "--resolution: must be a positive integer"),
    ("cache --config {recipe} --out {new} --resolution 20", "20 is not a multiple of data.bucket_multiple"),
    ("cache --config {recipe} --out {new} --device nosuch", "unknown device 'nosuch'"),
    ("cache --config {recipe} --out {new} --device cuda:7", "device 'cuda:7'"),
    ("cache --config {recipe} --out {new} --source-folder /nonexistent", "data folder /nonexistent does not exist"),
    ("cache --config {recipe} --out {new} --source-folder {empty}", "holds no images"),
    # ------------------------------------------------------------------ generate
    ("generate " + PX + " --out {new}.png --height 0", "--height: must be a positive integer, got '0'"),
    ("generate " + PX + " --out {new}.png --width -8", "--width: must be a positive integer, got '-8'"),
    ("generate " + PX + " --out {new}.png --height abc", "--height: expected an integer, got 'abc'"),
    ("generate " + PX + " --out {new}.png --height 25", "height 25 is not a positive multiple"),
    ("generate " + PX + " --out {new}.png --height 32 --width 36", "width 36 is not a positive multiple"),
    ("generate " + PX + " --out {new}.png --height 100000 --width 100000", "100000x100000 px needs at least"),
    ("generate " + PX + " --out {new}.png --guidance nan", "--guidance: must be a finite number, got 'nan'"),
    ("generate " + PX + " --out {new}.png --guidance inf", "--guidance: must be a finite number, got 'inf'"),
    ("generate " + PX + " --out {new}.png --class-label 5", "a pixart model is text-to-image: --class-label applies"),
    ("generate " + PX + " --out {new}.png --device nosuch", "unknown device 'nosuch'"),
    ("generate " + PX + " --out {new}.png --device cuda:9", "device 'cuda:9'"),
    ("generate " + PX + " --out {new}.png --dtype float8", "argument --dtype: unknown dtype 'float8'; valid: float32"),
    ("generate " + PX + " --out {new}.png --steps 0", "--steps: must be a positive integer, got '0'"),
    ("generate " + PX + " --out {new}.png --batch 0", "--batch: must be a positive integer, got '0'"),
    ("generate " + PX + " --out {new}.png --parallel 0", "--parallel: must be a positive integer, got '0'"),
    ("generate " + PX + " --out {new}.png --parallel 2 --low-memory", "--low-memory and --parallel do not combine"),
    ("generate " + PX + " --out {new}.png --low-memory", "--low-memory loads the pipeline component by component"),
    ("generate " + PX + " --out {new}.jpg", "--out must name a .png file, got"),
    ("generate " + PX + " --out {empty}", "--out must name a .png file"),
    ("generate " + PX + " --out ''", "--out: must not be empty"),
    ("generate " + PX + " --out {png}", "already exists"),
    ("generate " + PX + " --out {new}.png --batch 2 --prompt b", "already exists"),  # {new}_2.png exists
    ("generate " + PX + " --out {file}/x.png", "is a file, not a folder"),
    ("generate --model {student} --base builtin:dit --prompt a --out {new}.png", "--base builtin:dit is a dit pipeline"),
    ("generate --model {student} --base {teacher} --prompt a --out {new}.png", "is not a diffusers pipeline folder"),
    ("generate --model {student} --base /nonexistent --prompt a --out {new}.png", "--base /nonexistent: no such"),
    ("generate --model {student} --base builtin:nosuch --prompt a --out {new}.png", "no built-in teacher 'nosuch'"),
    ("generate --model {student} --prompt a --out {new}.png", "holds only the transformer"),
    ("generate --model {student} --base builtin:pixart --out {new}.png", "pass --prompt"),
    ("generate --model /nonexistent --base builtin:pixart --prompt a --out {new}.png", "no model at '/nonexistent'"),
    ("generate --model builtin:nosuch --prompt a --out {new}.png", "no built-in teacher 'nosuch'"),
    ("generate --model builtin:dit --class-label 5000 --out {new}.png", "class label 5000 is out of range"),
    ("generate --model builtin:dit --class-label -1 --out {new}.png", "class label -1 is out of range"),
    ("generate --model builtin:dit --prompt a --class-label 1 --out {new}.png", "instead of --prompt"),
    ("generate --model builtin:dit --out {new}.png", "pass --class-label"),
    ("generate --model builtin:dit --class-label 1 --height 32 --width 64 --out {new}.png", "square images only"),
    ("generate --model builtin:pixart --prompt a --out {new}.png --parallel 2", "needs a model converted"),
    # ------------------------------------------------------------------ quantize
    ("quantize --model {student} --scheme int8-dynamic --out {existing}", "already exists"),
    ("quantize --model {student} --scheme int8-dynamic --out ''", "--out: must not be empty"),
    ("quantize --model {student} --scheme int8-dynamic --out /dev/null", "/dev/null exists and is not a folder"),
    ("quantize --model {student} --scheme nosuch --out {new}", "unknown quantization scheme 'nosuch'"),
    ("quantize --model {student} --scheme int8-dynamic --out {new} --device nosuch", "unknown device 'nosuch'"),
    ("quantize --model {student} --scheme int8-dynamic --out {new} --device cuda", "device 'cuda'"),
    ("quantize --model {student} --scheme int8-dynamic --out {new} --backend nosuch", "backend 'nosuch'"),
    ("quantize --model {student} --scheme int4-weight --out {new} --group-size 0", "--group-size: must be a positive"),
    ("quantize --model {student} --scheme int4-weight --out {new} --group-size 3", "group_size must be an even number"),
    ("quantize --model {teacher} --scheme int8-dynamic --out {new}", "is not a lindit student folder"),
    ("quantize --model /nonexistent --scheme int8-dynamic --out {new}", "--model /nonexistent is not a lindit student folder"),
    # ------------------------------------------------------------------ export
    ("export --model {student} --format onnx --height 32 --width 32 --out {new}.onnx --vae-factor 0",
     "--vae-factor: must be a positive integer, got '0'"),
    ("export --model {student} --format onnx --height 32 --width 32 --out {new}.onnx --prompt-tokens 0",
     "--prompt-tokens: must be a positive integer, got '0'"),
    ("export --model {student} --format onnx --height 0 --width 32 --out {new}.onnx", "--height: must be a positive"),
    ("export --model {student} --format onnx --height 20 --width 32 --out {new}.onnx", "--height 20 is not a positive"),
    ("export --model {student} --format onnx --height 32 --width 32 --out {new}.pt2", "must end in .onnx"),
    ("export --model {student} --format torch-export --height 32 --width 32 --out {new}.onnx", "must end in .pt2"),
    ("export --model {student} --format onnx --height 32 --width 32 --out {onnx}", "already exists"),
    ("export --model {student} --format onnx --height 32 --width 32 --out ''", "--out: must not be empty"),
    ("export --model {student} --format tflite --height 32 --width 32 --out {new}.onnx", "invalid choice: 'tflite'"),
    ("export --model /nonexistent --format onnx --height 32 --width 32 --out {new}.onnx", "no model at '/nonexistent'"),
    ("export --preset nosuch --format onnx --height 32 --width 32 --out {new}.onnx", "unknown preset 'nosuch'"),
    ("export --preset pixart-sigma --method nosuch --format onnx --height 32 --width 32 --out {new}.onnx",
     "'nosuch' does not fit"),
    ("export --preset pixart-sigma --blocks 0 --format onnx --height 32 --width 32 --out {new}.onnx",
     "--blocks: must be a positive integer"),
    ("export --model {student} --method edit --format onnx --height 32 --width 32 --out {new}.onnx",
     "--method and --blocks apply to --preset"),
    ("export --model {student} --format onnx --height 32 --width 32 --out {new}.onnx --bench --repeats 0",
     "--repeats: must be a positive integer"),
    # ------------------------------------------------------------------ train-teacher
    ("train-teacher nosuch", "invalid choice: 'nosuch'"),
    ("train-teacher pixart --steps 0 --out {new}", "--steps: must be a positive integer, got '0'"),
    ("train-teacher pixart --steps 1 --out {existing}", "already exists"),
    ("train-teacher pixart --steps 1 --out ''", "--out: must not be empty"),
    ("train-teacher pixart --steps 1 --out /dev/null", "/dev/null exists and is not a folder"),
    ("train-teacher autoencoder --steps 1 --out {existing}", "already exists"),
    # ------------------------------------------------------------------ demo
    ("demo --out {existing} --quick", "already exists"),
    ("demo --out ''", "--out: must not be empty"),
    ("demo --out /dev/null", "/dev/null exists and is not a folder"),
    ("demo --out {file} --quick", "is not a folder"),
    ("demo --families nosuch --out {new}", "unknown demo family 'nosuch'"),
    ("demo --families pixart --methods nosuch --out {new}", "unknown method 'nosuch'"),
    ("demo --families pixart --methods mm_edit --out {new}", "student 'mm_edit' does not fit the pixart family"),
    ("demo --families pixart --methods kv_compress:factor=0 --out {new}", "factor=0"),
    ("demo --families sd3 --methods mm_edit:eta=bogus --out {new}", "eta='bogus'"),
    ("demo --steps 0 --out {new}", "--steps: must be a positive integer, got '0'"),
    ("demo --lr nan --out {new}", "--lr: must be a finite number, got 'nan'"),
    ("demo --lr 0 --out {new}", "--lr: must be a positive number, got '0'"),
    ("demo --batch-size 0 --out {new}", "--batch-size: must be a positive integer"),
    ("demo --n-eval 0 --out {new}", "--n-eval: must be a positive integer"),
    ("demo --guidance nan --out {new}", "--guidance: must be a finite number, got 'nan'"),
    ("demo --caption-dropout 1.5 --out {new}", "--caption-dropout must be in [0, 1), got 1.5"),
    ("demo --task-weight -1 --out {new}", "--task-weight must be >= 0, got -1"),
    ("demo --ema 2 --out {new}", "--ema must be a decay in (0, 1) or 'warmup', got '2'"),
    ("demo --lr-schedule nosuch --quick --out {new}", "unknown learning-rate schedule 'nosuch'"),
    ("demo --feature-inputs nosuch --out {new}", "invalid choice: 'nosuch'"),
    # ------------------------------------------------------------------ eval
    ("eval --model builtin:pixart --prompts /nonexistent --out {new}", "prompts file /nonexistent does not exist"),
    ("eval --model builtin:pixart --prompts {empty} --out {new}", "does not exist"),
    ("eval --model builtin:pixart --prompts {prompts} --out {existing}", "already exists"),
    ("eval --model builtin:pixart --prompts {prompts} --out ''", "--out: must not be empty"),
    ("eval --model builtin:pixart --prompts {prompts} --out /dev/null", "/dev/null exists and is not a folder"),
    ("eval --model builtin:pixart --class-labels 1 --out {new}", "is not class-conditional: pass --prompts"),
    ("eval --model builtin:pixart --out {new}", "pass either --prompts FILE"),
    ("eval --model builtin:dit --class-labels 5000 --out {new}", "class label 5000 is out of range"),
    ("eval --model builtin:dit --class-labels abc --out {new}", "class labels 'abc'"),
    ("eval --model builtin:dit --prompts {prompts} --out {new}", "class-conditional: pass --class-labels"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --batch-size 0", "--batch-size: must be a positive"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --device nosuch", "unknown device 'nosuch'"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --reference /nonexistent", "reference folder"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --guidance nan", "--guidance: must be a finite"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --height 0", "--height: must be a positive"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --height 20", "height 20 is not a positive"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --steps 0", "--steps: must be a positive"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --inception-weights /nonexistent",
     "Inception weights file /nonexistent does not exist"),
    ("eval --model builtin:pixart --prompts {prompts} --out {new} --clip-model /nonexistent",
     "CLIP model folder /nonexistent has no config.json"),
    ("eval --model /nonexistent --base builtin:pixart --prompts {prompts} --out {new}", "no model at '/nonexistent'"),
    # ------------------------------------------------------------------ bench
    ("bench model --presets nosuch", "invalid choice: 'nosuch'"),
    ("bench model --methods nosuch --out {new}", "unknown method(s) ['nosuch']"),
    ("bench model --resolutions 0 --out {new}", "--resolutions: must be a positive integer, got '0'"),
    ("bench model --resolutions 100 --out {new}", "sizes must be multiples of 16 px"),
    ("bench model --non-square 10xabc --out {new}", "--non-square expects HxW in px"),
    ("bench model --layers 3 --out {new}", "--layers must be 1 or full, got '3'"),
    ("bench model --device nosuch --out {new}", "unknown device 'nosuch'"),
    ("bench model --repeats 0 --out {new}", "--repeats: must be a positive integer, got '0'"),
    ("bench model --max-seconds -1 --out {new}", "--max-seconds: must be a positive number, got '-1'"),
    ("bench model --dtype float8 --out {new}", "unknown dtype 'float8'; valid: float32"),
    ("bench attention --mechanisms nosuch", "invalid choice: 'nosuch'"),
    ("bench attention --tokens 0 --out {new}", "--tokens: must be a positive integer, got '0'"),
    ("bench attention --heads 0 --out {new}", "--heads: must be a positive integer, got '0'"),
    ("bench attention --device nosuch --out {new}", "unknown device 'nosuch'"),
    ("bench parallel --size 10x10", "--size expects HxW in px, multiples of 16, got '10x10'"),
    ("bench parallel --processes 0 --size 32x32", "--processes: must be a positive integer, got '0'"),
    ("bench parallel --blocks 0 --size 32x32", "--blocks: must be a positive integer, got '0'"),
    ("bench paired --preset nosuch", "invalid choice: 'nosuch'"),
    ("bench paired --methods nosuch", "--methods must include 'teacher'"),
    ("bench paired --size 0", "--size must be PX or HxW in px"),
    ("bench paired --rounds 0", "--rounds: must be a positive integer, got '0'"),
    ("bench targets /nonexistent.json", "/nonexistent.json does not exist"),
    # ------------------------------------------------------------------ diagnose
    ("diagnose --teacher builtin:pixart --method nosuch --out {new}", "unknown method 'nosuch'"),
    ("diagnose --teacher builtin:pixart --method edit --n 0 --out {new}", "--n: must be a positive integer, got '0'"),
    ("diagnose --teacher builtin:pixart --method edit --batch-size 0 --out {new}",
     "--batch-size: must be a positive integer, got '0'"),
    ("diagnose --teacher builtin:pixart --out {new}", "give --method (a fresh conversion) or --student"),
    ("diagnose --teacher builtin:nosuch --method edit --out {new}", "unknown built-in teacher 'nosuch'"),
    ("diagnose --teacher builtin:pixart --method edit --option heads=2 --out {new}",
     "unknown option(s) ['heads'] for method 'edit'"),
    ("diagnose --teacher builtin:pixart --method edit --option cf_reduction=0 --out {new}",
     "option cf_reduction=0 of method 'edit'"),
    ("diagnose --teacher builtin:pixart --student /nonexistent --out {new}", "--student /nonexistent is not a folder"),
    ("diagnose --teacher /nonexistent --method edit --out {new}", "--config (a lindit distill recipe"),
    ("diagnose --teacher builtin:pixart --inherit qv --out {new}", "give --method too"),
    ("diagnose --teacher builtin:pixart --method edit --layers 99 --out {new}", "layers [99] out of range"),
    ("diagnose --teacher builtin:pixart --method edit --device nosuch --out {new}", "nosuch"),
    ("diagnose --teacher builtin:pixart --method edit --out ''", "--out: must not be empty"),
    # ------------------------------------------------------------------ world
    ("world", "the following arguments are required: COMMAND"),
    ("world nosuch", "invalid choice: 'nosuch'"),
    ("world fid --n abc", "--n: expected an integer, got 'abc'"),
    ("world autoencoder --n -1", "--n: must be a positive integer, got '-1'"),
    ("world detect --n 0", "--n: must be a positive integer, got '0'"),
    ("world detect --sizes 32xabc", "--sizes: expected H or HxW in px, got '32xabc'"),
    ("world shapes --grid ''", "--grid: must not be empty"),
    ("world text --out {new}/enc.safetensors", "nothing to do: pass --write-assets"),
    ("world features --out {new}/classifier.safetensors", "nothing to do: pass --train"),
    # ------------------------------------------------------------------ deploy
    ("deploy", "the following arguments are required: COMMAND"),
    ("deploy bench --presets nosuch --out {new}", "invalid choice: 'nosuch'"),
    ("deploy bench --sizes 0 --out {new}", "--sizes: must be a positive integer, got '0'"),
    ("deploy quality --out {new}", "the following arguments are required: --model"),
    ("deploy quality --world dit --model builtin:dit --n 0 --out {new}", "--n: must be a positive integer, got '0'"),
    ("deploy synthetic --out {existing}", "already exists"),
    ("deploy synthetic --text-layers 0 --out {new}", "--text-layers: must be a positive integer, got '0'"),
    ("deploy encoder-memory", "the following arguments are required: --dir"),
]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, student):
    """The files and folders the rows name; ``new`` is a fresh name per row (filled in by the test)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "existing").mkdir()
    (root / "existing" / "mine.txt").write_text("the user's")
    (root / "empty").mkdir()
    (root / "file.txt").write_text("x")
    (root / "prompts.txt").write_text("a red circle\n")
    (root / "taken.png").write_bytes(b"png")
    (root / "taken.onnx").write_bytes(b"onnx")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "broken.yaml").write_text("key: [unclosed\n")
    (root / "selfref.yaml").write_text("a: &a\n  b: *a\n")
    (root / "bomb.yaml").write_text(billion_laughs(9))
    for name in ("noweights", "truncated"):
        (root / name).mkdir()
        (root / name / "config.json").write_text((teacher_dir("pixart") / "config.json").read_text())
    weights = (teacher_dir("pixart") / "diffusion_pytorch_model.safetensors").read_bytes()
    (root / "truncated" / "diffusion_pytorch_model.safetensors").write_bytes(weights[:5000])
    recipe = write_recipe(root / "recipe.yaml")
    assert main(["distill", "--config", str(recipe), "--out", str(root / "run")]) == 0
    return {"root": root, "student": student, "teacher": teacher_dir("pixart"), "existing": root / "existing",
            "empty": root / "empty", "file": root / "file.txt", "prompts": root / "prompts.txt",
            "png": root / "taken.png", "onnx": root / "taken.onnx", "listyaml": root / "list.yaml",
            "brokenyaml": root / "broken.yaml", "selfref": root / "selfref.yaml", "bomb": root / "bomb.yaml",
            "noweights": root / "noweights", "truncated": root / "truncated", "recipe": recipe, "run": root / "run"}


@pytest.mark.parametrize("command, fragment", CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_line_naming_it(paths, command, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative outputs land in this row's own folder
    new = tmp_path / "new"
    (tmp_path / "new_1.png").write_bytes(b"png")  # taken, for the row with --batch 2
    before = sorted(p.name for p in paths["root"].iterdir())
    run_before = snapshot(paths["run"])
    argv = shlex.split(command.format(**paths, new=new))
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lindit") and "error:" in lines[0], err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]
    assert not new.exists() and not list(tmp_path.glob("new*.png"))[1:]  # nothing written
    assert sorted(p.name for p in paths["root"].iterdir()) == before and snapshot(paths["run"]) == run_before
    assert seconds < 20, f"{seconds:.1f} s before the error: the check must come before the long work"


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_the_table_covers_every_command():
    from lindit.cli import COMMANDS

    first = {shlex.split(c)[0] for c, _ in CASES}
    assert set(COMMANDS) <= first and len(CASES) >= 150


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only user errors become one line: an unexpected exception type (ours) is raised again."""
    import lindit.cli.convert as convert_cli

    def bug(args):
        raise KeyError("internal")

    monkeypatch.setattr(convert_cli, "run", bug)
    with pytest.raises(KeyError, match="internal"):
        main(["convert", "--teacher", "x", "--out", "y"])


def test_model_loading_does_not_warn_on_stderr(paths, tmp_path, capsys):
    """A successful run prints no library warnings that an error line would then follow."""
    assert main(["generate", "--model", str(paths["student"]), "--base", "builtin:pixart", "--prompt", "a",
                 "--steps", "1", "--out", str(tmp_path / "ok.png")]) == 0
    err = capsys.readouterr().err
    assert not [line for line in err.splitlines() if line.strip() and "it/s]" not in line], err
    assert torch.is_tensor(torch.zeros(1)) and json and yaml  # imports used by the fixtures
