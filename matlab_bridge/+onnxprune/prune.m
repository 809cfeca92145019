function result = prune(model, varargin)
%PRUNE Prune an ONNX model: data-free, or with data, fine-tuning and rounds (OMP/IMP).
%   r = onnxprune.prune('alexnet.onnx', 'Sparsity', 0.9)
%   r = onnxprune.prune('alexnet.onnx', 'Sparsity', 0.8, 'Data', 'images/', 'FinetuneEpochs', 3, 'Iterations', 3)
%   r = onnxprune.prune('net.onnx', 'Sparsity', 0.8, 'Images', X, 'Labels', Y, 'FinetuneEpochs', 1)
%   r = onnxprune.prune('net.onnx', 'Method', 'taylor', 'Sparsity', 0.3, 'Data', 'images/')
%   Every option of `onnxprune prune` is a name-value argument (Method, Scope, Config,
%   SkipFirst, Output, OutDir, BatchSize, Lr, Optimizer, DistillWeight, Schedule, ...), with
%   the same defaults and the same checks; Images/Labels (and ValImages/ValLabels) are MATLAB
%   arrays (H x W x C x N or D x N; labels numeric or cellstr).
%   r has output (char), sparsity, total_sparsity, layer_names (cellstr), layer_sparsity, opset,
%   and for runs with data the round table as columns (rounds_round, rounds_sparsity,
%   rounds_top1, ...), baseline_top1, final_top1, folder and figures (cellstr of PNG paths).
%   A line per round and epoch is printed while it runs. The written file keeps dense
%   initializers, the original opset, names and batch dimension: importPruned reads it.
    result = onnxprune.internal.call('prune', onnxprune.internal.absolute(model), varargin);
end
