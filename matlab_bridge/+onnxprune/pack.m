function result = pack(model, varargin)
%PACK Store a pruned model in its smallest lossless form (values + bit mask, deflated).
%   r = onnxprune.pack('pruned.onnx', 'Output', 'pruned.onnxz')   % r.bytes, r.information_bound
    result = onnxprune.internal.call('pack', onnxprune.internal.absolute(model), varargin);
end
