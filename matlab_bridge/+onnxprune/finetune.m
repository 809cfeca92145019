function result = finetune(model, varargin)
%FINETUNE Fine-tune a pruned ONNX model with its zeros held at zero; write the best epoch.
%   r = onnxprune.finetune('pruned.onnx', 'Data', 'images/', 'Epochs', 3, 'Output', 'tuned.onnx')
%   r = onnxprune.finetune('pruned.onnx', 'Images', X, 'Labels', Y, 'Epochs', 3, 'Output', 'tuned.onnx')
%   Every option of `onnxprune finetune` (BatchSize, Lr, Optimizer, Momentum, WeightDecay,
%   LabelSmoothing, Augment, Device, Val, ValSplit, Limit, PixelRange, Mean, Std, Flatten, Seed).
%   r has output, best_epoch, lr and one column per epoch field: epochs_epoch, epochs_train_loss,
%   epochs_train_top1, epochs_val_top1, ... A line per epoch is printed while it trains.
    result = onnxprune.internal.call('finetune', onnxprune.internal.absolute(model), varargin);
end
