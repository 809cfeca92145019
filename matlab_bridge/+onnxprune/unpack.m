function result = unpack(package, varargin)
%UNPACK Restore the ONNX model a package written by onnxprune.pack holds, exactly.
%   r = onnxprune.unpack('pruned.onnxz', 'Output', 'pruned.onnx')
    result = onnxprune.internal.call('unpack', onnxprune.internal.absolute(package), varargin);
end
