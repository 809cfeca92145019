function result = prune(model, varargin)
%PRUNE Prune an ONNX model and write it beside the input (or to 'Output').
%   r = onnxprune.prune('alexnet.onnx', 'Sparsity', 0.9)
%   r = onnxprune.prune('alexnet.onnx', 'Sparsity', 0.9, 'Scope', 'global', 'Output', 'pruned.onnx')
%   Name-value arguments: Sparsity (0.5), Method ('magnitude', 'l1-filter', ...), Scope ('layer' or
%   'global'), Output, Config (a ratio .yaml), SkipFirst, SkipLast.
%   r has fields output (char), sparsity, total_sparsity (double), layer_names (cellstr),
%   layer_sparsity (double column), max_abs_diff, opset. The written file keeps dense
%   initializers, the original opset, names and batch dimension: importPruned reads it.
    result = onnxprune.internal.call('prune', onnxprune.internal.absolute(model), varargin);
end

