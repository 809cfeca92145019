function result = compact(model, varargin)
%COMPACT Remove every all-zero filter and neuron for real: smaller tensors, the same outputs.
%   r = onnxprune.compact('masked.onnx', 'Output', 'small.onnx')
%   r has output, params and macs (before; after), max_abs_diff, and per layer the channels
%   removed and kept (removed_<layer>, kept_<layer>).
    result = onnxprune.internal.call('compact', onnxprune.internal.absolute(model), varargin);
end
