% The +onnxprune package under GNU Octave (file transport), driven by tests/test_matlab_bridge.py.
addpath(getenv('BRIDGE_DIR'));
work = getenv('WORK_DIR');
cd(work);
onnxprune.setup('Python', getenv('ONNXPRUNE_PYTHON'));

% inspect, with a path relative to Octave's working folder
r = onnxprune.inspect('fixture.onnx');
assert(iscellstr(r.layer_names) && numel(r.layer_names) == 8);
assert(isa(r.layer_params, 'double') && iscolumn(r.layer_params));
assert(strcmp(r.input_name, 'data') && r.opset == 8);

% prune: struct fields and types; the written file is there
r = onnxprune.prune('fixture.onnx', 'Sparsity', 0.5, 'Scope', 'global', 'Output', 'pruned.onnx');
assert(abs(r.sparsity - 0.5) < 1e-3 && ischar(r.output) && exist(r.output, 'file') == 2);
assert(iscellstr(r.layer_names) && numel(r.layer_sparsity) == numel(r.layer_names));

% MNIST arrays from Octave into MATLAB's cora_mnist_point.onnx (column-major flattening)
data = load('mnist.mat');
cora = getenv('CORA');
r = onnxprune.evaluate(cora, 'Images', double(data.X) / 255, 'Labels', double(data.Y), 'Flatten', 'column');
assert(r.top1 > 0.95 && r.samples == 300);
r = onnxprune.sweep(cora, 'Images', double(data.X) / 255, 'Labels', double(data.Y), 'Flatten', 'column', ...
                    'Sparsities', '0:0.3:0.9', 'Scope', 'global', 'Results', 'sweep');
assert(iscolumn(r.sparsity) && numel(r.accuracy) == 4 && r.accuracy(1) == r.baseline_accuracy);
assert(r.accuracy(end) < r.accuracy(1));
S = load(fullfile(work, 'sweep', 'results.mat'));
assert(iscell(S.layer_names) && isa(S.sparsity, 'double') && size(S.sparsity, 2) == 1);
assert(iscell(S.method) && ischar(S.method{1}));

% bench
r = onnxprune.bench({'fixture.onnx', 'pruned.onnx'}, 'Runs', 3);
assert(numel(r.latency_ms) == 2 && all(r.bytes > 0));

% errors come back with identifiers
try
    onnxprune.prune('fixture.onnx', 'Sparsiti', 0.5);
    error('test:noError', 'expected an error');
catch caught
    assert(strcmp(caught.identifier, 'onnxprune:badArgument'), caught.identifier);
end
try
    onnxprune.prune('missing.onnx');
    error('test:noError', 'expected an error');
catch caught
    assert(strcmp(caught.identifier, 'onnxprune:fileNotFound'), caught.identifier);
end
try
    onnxprune.setup('Python', '/nonexistent/python3');
    error('test:noError', 'expected an error');
catch caught
    assert(strcmp(caught.identifier, 'onnxprune:noPython'), caught.identifier);
end
try
    onnxprune.importPruned('pruned.onnx');
    error('test:noError', 'expected an error');
catch caught
    assert(strcmp(caught.identifier, 'onnxprune:noMATLAB'), caught.identifier);
end
disp('OCTAVE TESTS PASSED');
