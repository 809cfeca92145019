function result = evaluate(model, varargin)
%EVALUATE Top-1 / top-5 accuracy and loss of an ONNX model.
%   r = onnxprune.evaluate('net.onnx', 'Data', 'images/')          % folder, .zip, .mat, .npz
%   r = onnxprune.evaluate('net.onnx', 'Images', X, 'Labels', Y)   % X: H x W x C x N, Y: numbers or cellstr
%   Other arguments: PixelRange ('0-255' or '0-1'), Mean, Std, Flatten ('row' or 'column'),
%   Engine ('onnxruntime' or 'torch'). r has fields top1, top5, loss, samples, engine and notes
%   (cellstr: how the samples were prepared; an accuracy near chance, a loss that says the inputs
%   are on another scale).
    result = onnxprune.internal.call('evaluate', onnxprune.internal.absolute(model), varargin);
end

