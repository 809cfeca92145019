function result = call(name, first, args)
%CALL Run matlab_bridge.NAME(first, args{:}) in Python; return a struct.
    if mod(numel(args), 2) ~= 0
        error('onnxprune:badArgument', 'arguments must come in name-value pairs');
    end
    for k = 1:2:numel(args)
        if ~ischar(args{k})
            error('onnxprune:badArgument', 'argument names must be text, e.g. ''Sparsity''');
        end
        args{k + 1} = resolve(args{k}, args{k + 1});
    end
    transport = 'file';
    if ispref('onnxprune', 'transport')
        transport = getpref('onnxprune', 'transport');
    end
    if strcmp(transport, 'py') && ~exist('OCTAVE_VERSION', 'builtin')
        result = call_py(name, first, args);
    else
        result = call_file(name, first, args);
    end
end

function value = resolve(name, value)
% Paths are relative to MATLAB's working folder, not Python's.
    if any(strcmpi(name, {'Data', 'Val', 'Output', 'Config', 'OutDir'})) && ischar(value) && ~isempty(value)
        value = onnxprune.internal.absolute(value);
    end
    if any(strcmpi(name, {'Labels'})) && isa(value, 'categorical')
        error('onnxprune:badInput', 'Labels are categorical, which Python cannot read: pass cellstr(labels) or double(labels)');
    end
end

function result = call_file(name, first, args)
    python = onnxprune.internal.python();  % names itself in the command window once per session
    folder = tempname();
    mkdir(folder);
    cleanup = onCleanup(@() rmdir(folder, 's'));
    in = fullfile(folder, 'in.mat');
    out = fullfile(folder, 'out.mat');
    s = struct();
    if any(strcmp(name, {'bench', 'plot'}))
        s.Models = first;
    else
        s.Model = first;
    end
    for k = 1:2:numel(args)
        s.(args{k}) = args{k + 1};
    end
    save('-v7', in, '-struct', 's');
    % progress (a line per round and epoch) shows in the command window as it comes; errors
    % before Python could answer (no Python, no onnxprune) are read from the captured stderr
    log = fullfile(folder, 'stderr.txt');
    status = system(sprintf('"%s" -m matlab_bridge %s "%s" "%s" 2>"%s"', python, name, in, out, log));
    output = '';
    if exist(log, 'file')
        output = fileread(log);
    end
    if ~exist(out, 'file')
        if status == 127 || ~isempty(strfind(output, 'No module named'))
            error('onnxprune:noPython', 'cannot run onnxprune with "%s": run onnxprune.setup(''Python'', ...) first (%s)', ...
                  python, strtrim(output));
        end
        error('onnxprune:internal', 'the Python side failed: %s', strtrim(output));
    end
    result = load(out);
    if ~result.ok
        error(result.error_identifier, '%s', result.error_message);
    end
    result = rmfield(result, 'ok');
end

function result = call_py(name, first, args)
    persistent named
    if isempty(named)  % once per session, as the file transport does
        environment = pyenv();
        fprintf('onnxprune: using Python %s (MATLAB''s pyenv, transport py; onnxprune.setup changes it)\n', ...
                char(environment.Executable));
        named = true;
    end
    module = py.importlib.import_module('matlab_bridge');
    try
        value = module.(name)(first, pyargs(args{:}));
    catch caught
        message = caught.message;
        token = regexp(message, '(onnxprune:\w+): (.*)', 'tokens', 'once');
        if ~isempty(token)
            error(token{1}, '%s', strtrim(token{2}));
        end
        rethrow(caught);
    end
    result = struct();
    keys = cell(py.list(value.keys()));
    for k = 1:numel(keys)
        item = value{keys{k}};
        if isa(item, 'py.list')
            item = cellfun(@char, cell(item), 'UniformOutput', false)';
        elseif isa(item, 'py.str')
            item = char(item);
        elseif isa(item, 'py.numpy.ndarray')
            item = double(item)';
        elseif isa(item, 'py.bool')
            item = logical(item);
        end
        result.(char(keys{k})) = item;
    end
end
