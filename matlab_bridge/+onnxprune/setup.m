function setup(varargin)
%SETUP Choose the Python that runs onnxprune, and how MATLAB talks to it.
%   onnxprune.setup()                          use $ONNXPRUNE_PYTHON, else this checkout's .venv
%                                              Python, else python3 on the path
%   onnxprune.setup('Python', '/path/to/onnxprune/.venv/bin/python')
%   onnxprune.setup('Transport', 'file')       .mat files and a subprocess (always works)
%   onnxprune.setup('Transport', 'py')         MATLAB's py. interface, out of process
%
%   In MATLAB, the py. transport runs Python with pyenv(ExecutionMode="OutOfProcess"):
%   torch loaded inside the MATLAB process crashes it (library clashes). GNU Octave has no py.
%   interface and always uses the file transport.
%
%   The choice is remembered in the preferences, across sessions and checkouts. The first call
%   of a session names the Python it uses (onnxprune: using Python ...), and uses this
%   checkout's .venv Python instead of a remembered one that runs another checkout's onnxprune.
    p = inputParser();
    p.FunctionName = 'onnxprune.setup';
    p.addParameter('Python', '', @ischar);
    p.addParameter('Transport', '', @ischar);
    p.parse(varargin{:});
    python = p.Results.Python;
    if isempty(python)
        python = getenv('ONNXPRUNE_PYTHON');
    end
    if isempty(python)
        python = onnxprune.internal.venv();
    end
    if isempty(python)
        python = 'python3';
    end
    [status, ~] = system(sprintf('"%s" -c "import matlab_bridge"', python));
    if status ~= 0
        error('onnxprune:noPython', ['cannot run "%s" with onnxprune installed: install onnxprune ', ...
              '(pip install -e .) and pass its Python, e.g. onnxprune.setup(''Python'', ''.venv/bin/python'')'], python);
    end
    setpref('onnxprune', 'python', python);
    transport = p.Results.Transport;
    if isempty(transport)
        transport = 'file';
    end
    if strcmp(transport, 'py')
        if exist('OCTAVE_VERSION', 'builtin')
            error('onnxprune:badInput', 'GNU Octave has no py. interface: use Transport ''file''');
        end
        pyenv('Version', python, 'ExecutionMode', 'OutOfProcess');
    end
    setpref('onnxprune', 'transport', transport);
end
