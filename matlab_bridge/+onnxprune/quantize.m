function result = quantize(model, varargin)
%QUANTIZE Quantize a float ONNX model to int8 with onnxruntime.quantization; zeros stay zero.
%   r = onnxprune.quantize('pruned.onnx', 'Output', 'int8.onnx', 'Data', 'images/')     % static, calibrated
%   r = onnxprune.quantize('pruned.onnx', 'Output', 'int8.onnx', 'Method', 'dynamic')
%   Images/Labels arrays work as for evaluate. r has output, method, bytes_before, bytes_after,
%   zeros_before, zeros_after, top1_before, top1_after (NaN without data), and kept_float
%   (the layers left float: 'KeepFloat' 'auto' keeps those measured faster in float, 'none', or names).
%   MATLAB cannot import the int8 (QDQ) file: importPruned says so; deploy it with onnxruntime.
    result = onnxprune.internal.call('quantize', onnxprune.internal.absolute(model), varargin);
end
