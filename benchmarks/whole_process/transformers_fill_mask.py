"""What a user of transformers runs for one fill-mask: tokenizer, from_pretrained, one forward, argmax bytes.

Usage: python transformers_fill_mask.py "text with one [MASK:n]" CHECKPOINT_DIR
(the whole-process comparison in benchmarks/whole_process/README.md)."""

import sys

import torch
import transformers

torch.set_grad_enabled(False)
text, checkpoint = sys.argv[1], sys.argv[2]
tokenizer = transformers.PerceiverTokenizer()
model = transformers.PerceiverForMaskedLM.from_pretrained(checkpoint).eval()
start = text.index("[MASK:")
close = text.index("]", start)
length = int(text[start + 6:close])
plain = text[:start] + "?" * length + text[close + 1:]  # ASCII text assumed: one byte per character
encoded = tokenizer(plain, padding="max_length", max_length=model.config.max_position_embeddings,
                    return_tensors="pt", add_special_tokens=False)
encoded["input_ids"][0, start:start + length] = tokenizer.mask_token_id
logits = model(**encoded).logits
print(tokenizer.decode(logits[0, start:start + length].argmax(-1).tolist()))
