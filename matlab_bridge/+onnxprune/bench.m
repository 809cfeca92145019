function result = bench(models, varargin)
%BENCH Median onnxruntime latency and file size of one or more models.
%   r = onnxprune.bench({'dense.onnx', 'pruned.onnx'}, 'BatchSize', 1, 'Runs', 100)
%   r has fields models (cellstr), latency_ms and bytes (double columns), batch.
    if ischar(models)
        models = {models};
    end
    models = onnxprune.internal.absolute(models);
    result = onnxprune.internal.call('bench', models, varargin);
end
