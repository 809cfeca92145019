function result = sensitivity(model, varargin)
%SENSITIVITY Prune one layer at a time; write per-layer ratios that reach a target sparsity.
%   r = onnxprune.sensitivity('net.onnx', 'Data', 'images/', 'Target', 0.8, 'MaxDrop', 0.01)
%   r.ratios_file is a YAML for onnxprune.prune(..., 'Config', r.ratios_file); r.layer_names and
%   r.layer_ratio list the ratios, r.reached the overall sparsity, r.figure the plot.
    result = onnxprune.internal.call('sensitivity', onnxprune.internal.absolute(model), varargin);
end
