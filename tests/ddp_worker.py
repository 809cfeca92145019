"""Fine-tune a pruned MLP under torchrun (or alone), distilling from the dense model, and save the weights.

Used by tests/test_bench.py: the ranks must agree, and agree with one process.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import onnxprune  # noqa: E402
from onnxprune.options import TrainOptions  # noqa: E402
from onnxprune.workbench.convert import to_torch  # noqa: E402
from onnxprune.workbench.data import Dataset, preprocess_for  # noqa: E402
from onnxprune.workbench.train import distributed, finetune, logits_module  # noqa: E402

model_path, out = sys.argv[1], Path(sys.argv[2])
model = onnxprune.load(model_path)
result = onnxprune.prune(model, 0.5)
rng = np.random.default_rng(0)
data = Dataset(rng.random((64, 20)).astype(np.float32), np.arange(64) % 4, list("abcd"), "synthetic", "0-1", True)
options = TrainOptions(epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=0.0, augment=False, seed=3,
                       distill_weight=0.5)  # fmt: skip
teacher = logits_module(to_torch(model), model.final_softmax)
finetune(result.torch_model, data, preprocess_for(model), options, teacher=teacher)
rank, world = distributed()
weights = {name: entry.to_onnx() for name, entry in result.torch_model.params.items()}
np.savez(out / f"weights_world{world}_rank{rank}.npz", **weights)

if world > 1:  # leave together: a rank that exits while the other is still in a collective aborts it
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
