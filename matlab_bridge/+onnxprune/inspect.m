function result = inspect(model)
%INSPECT Producer, opset, input, and every prunable layer of an ONNX model.
%   r = onnxprune.inspect('net.onnx');  disp(table(r.layer_names, r.layer_params))
    result = onnxprune.internal.call('inspect', onnxprune.internal.absolute(model), {});
end
