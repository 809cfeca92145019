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
assert(~any(strncmp(fieldnames(r), 'layers_', 7)));  % one name per field: layer_names, not layers_name too

% MNIST arrays from Octave into MATLAB's cora_mnist_point.onnx (column-major flattening)
data = load('mnist.mat');
cora = getenv('CORA');
r = onnxprune.evaluate(cora, 'Images', double(data.X) / 255, 'Labels', double(data.Y), 'Flatten', 'column');
assert(r.top1 > 0.95 && r.samples == 300 && iscellstr(r.notes));
rand('state', 0);  % noise: an accuracy near chance, and the note that says so
noise = rand(28, 28, 40);
r = onnxprune.evaluate(cora, 'Images', noise, 'Labels', mod(0:39, 10)', 'Flatten', 'column');
assert(iscellstr(r.notes) && any(~cellfun(@isempty, strfind(r.notes, 'near chance'))));
r = onnxprune.sweep(cora, 'Images', double(data.X) / 255, 'Labels', double(data.Y), 'Flatten', 'column', ...
                    'Sparsities', '0:0.3:0.9', 'Scope', 'global', 'OutDir', 'sweep');
assert(iscolumn(r.sparsity) && numel(r.accuracy) == 4 && r.accuracy(1) == r.baseline_accuracy);
assert(r.accuracy(end) < r.accuracy(1));
S = load(fullfile(work, 'sweep', 'results.mat'));
assert(iscell(S.layer_names) && isa(S.sparsity, 'double') && size(S.sparsity, 2) == 1);
assert(iscell(S.method) && ischar(S.method{1}));

% IMP, 2 rounds x 1 epoch, on MNIST arrays passed from Octave into MATLAB's sigmoid MLP
r = onnxprune.prune(getenv('NLN'), 'Sparsity', 0.8, 'Images', double(data.X), 'Labels', double(data.Y), ...
                    'FinetuneEpochs', 1, 'Iterations', 2, 'Scope', 'lamp', 'OutDir', 'imp', 'Output', 'imp.onnx');
assert(strcmp(r.mode, 'schedule') && isequal(r.rounds_round', [1 2]) && iscolumn(r.rounds_top1));
assert(abs(r.rounds_target_sparsity(end) - 0.8) < 1e-9 && abs(r.sparsity - 0.8) < 1e-3);
assert(r.final_top1 > 0.5 && r.final_top1 <= 1 && r.baseline_top1 > 0.9);
assert(exist(r.output, 'file') == 2 && iscellstr(r.figures) && numel(r.figures) == 2);
assert(all(cellfun(@(f) exist(f, 'file') == 2, r.figures)));
w = onnxprune.inspect(r.output);
assert(abs(sum(w.layer_zeros) / sum(w.layer_params) - 0.8) < 1e-3);

% Taylor pruning with data on a convolutional model, then compact, quantize, sensitivity
X = randi([0 255], 35, 35, 3, 40);
Y = mod(0:39, 5)';
r = onnxprune.prune('fixture.onnx', 'Method', 'taylor', 'Sparsity', 0.3, 'Images', X, 'Labels', Y, ...
                    'BatchesPerRound', 2, 'OutDir', 'taylor', 'Output', 'taylor.onnx');
assert(strcmp(r.method, 'taylor') && r.sparsity > 0.2 && isnumeric(r.rounds_params_removed));
assert(r.rounds_params_removed(end) > 0 && exist('taylor.onnx', 'file') == 2);
r = onnxprune.compact('fixture.onnx', 'Output', 'compacted.onnx');
assert(r.max_abs_diff < 1e-4 && isequal(size(r.params), [2 1]) && r.params(2) <= r.params(1));
r = onnxprune.quantize('pruned.onnx', 'Output', 'int8.onnx', 'Images', X, 'Labels', Y);
assert(strcmp(r.method, 'static') && r.bytes_after < r.bytes_before && r.zeros_after >= r.zeros_before);
assert(r.top1_before >= 0 && r.top1_after >= 0);
try
    onnxprune.importPruned('int8.onnx');
    error('test:noError', 'expected an error');
catch caught
    assert(strcmp(caught.identifier, 'onnxprune:cannotImport'), caught.identifier);
end
r = onnxprune.sensitivity('fixture.onnx', 'Images', X, 'Labels', Y, 'Sparsities', [0 0.5 0.9], ...
                          'Target', 0.5, 'OutDir', 'sens');
assert(exist(r.ratios_file, 'file') == 2 && iscellstr(r.layer_names) && iscolumn(r.layer_ratio));
assert(numel(r.layer_ratio) == 8 && all(r.layer_ratio >= 0 & r.layer_ratio < 1));

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
