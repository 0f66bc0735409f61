"""What a user of transformers runs to classify photos: image processor, from_pretrained, one image at a time.

Usage: python transformers_classify.py CHECKPOINT_DIR PHOTO [PHOTO ...]
(the whole-process comparison in benchmarks/whole_process/README.md)."""

import sys

import torch
import transformers
from PIL import Image

torch.set_grad_enabled(False)
checkpoint, photos = sys.argv[1], sys.argv[2:]
processor = transformers.PerceiverImageProcessor()
architecture = transformers.AutoConfig.from_pretrained(checkpoint).architectures[0]  # one of the three classes
model = getattr(transformers, architecture).from_pretrained(checkpoint).eval()
for path in photos:
    pixels = processor(Image.open(path).convert("RGB"), return_tensors="pt").pixel_values
    best = model(inputs=pixels).logits.softmax(-1)[0].topk(5)
    print(path, [(model.config.id2label[i], round(p, 4)) for p, i in zip(best.values.tolist(), best.indices.tolist())])
