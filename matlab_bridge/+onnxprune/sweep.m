function result = sweep(model, varargin)
%SWEEP Accuracy at each sparsity level without fine-tuning, and the trade-off.
%   r = onnxprune.sweep('net.onnx', 'Data', 'images/', 'Sparsities', '0:0.1:0.9', 'Scope', 'global')
%   plot(100 * r.sparsity, 100 * r.accuracy, '-o'); yline(100 * r.baseline_accuracy, '--')
%   Sparsities is text (MATLAB colon ranges) or a numeric vector. Other arguments: Method,
%   Scope, MaxDrop (0.01), OutDir (a folder for results.json/.csv/.mat and the figure), Images/Labels and the
%   preprocessing arguments of evaluate. r has column vectors sparsity, accuracy, loss,
%   num_nonzero, and baseline_accuracy, trade_off_sparsity, trade_off_accuracy, trade_off_units
%   (weights or channels), and per curve (method and scope), as column vectors, trade_off_curves_method,
%   trade_off_curves_scope, trade_off_curves_sparsity, trade_off_curves_accuracy,
%   trade_off_curves_knee_sparsity.
    result = onnxprune.internal.call('sweep', onnxprune.internal.absolute(model), varargin);
end

