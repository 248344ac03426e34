"""Hugging Face Trainer with expman.TransformersCallback: a tiny randomly initialised GPT-2
built from a config (no hub download, no network), trained for a few steps on the CPU.

    python examples/transformers_trainer.py && expman serve

TrainingArguments go to config.yaml under "args", the model config under "model"; every
Trainer log lands at its global step (loss -> train/loss, eval_loss -> eval/loss).
"""
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

import expman


class Counting(torch.utils.data.Dataset):
    """Sequences a tiny model learns quickly: k, 2k, 3k, ... modulo the vocabulary."""

    def __len__(self):
        return 256

    def __getitem__(self, i):
        ids = torch.arange(1, 17) * (i % 7 + 1) % 64
        return {"input_ids": ids, "labels": ids}


if __name__ == "__main__":
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                       n_head=2))
    args = TrainingArguments(output_dir="hf_out", max_steps=40, logging_steps=5,
                             per_device_train_batch_size=16, eval_strategy="steps",
                             eval_steps=20, learning_rate=3e-3, save_strategy="no",
                             report_to="none", use_cpu=True, disable_tqdm=True)
    callback = expman.TransformersCallback("tiny_gpt2", run_name="counting")
    trainer = Trainer(model=model, args=args, train_dataset=Counting(),
                      eval_dataset=Counting(), callbacks=[callback])
    trainer.train()
    trainer.evaluate()
    callback.close()
