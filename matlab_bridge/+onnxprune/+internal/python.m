function python = python()
%PYTHON The Python that runs onnxprune (file transport), named in the command window once per session.
%   Chosen from onnxprune.setup's preference, else $ONNXPRUNE_PYTHON, else this checkout's .venv
%   Python, else python3 on the path. Preferences outlive a checkout: a remembered Python whose
%   matlab_bridge is not the folder beside this +onnxprune package runs another checkout's code, so
%   this checkout's .venv Python is used instead where it runs this checkout's code, and the line
%   says so; where there is none, a warning (onnxprune:otherCheckout) names the other checkout.
%   The first call prints, e.g.
%     onnxprune: using Python /src/onnxprune/.venv/bin/python (from preferences; onnxprune.setup changes it)
%   and later calls print nothing until the preference or $ONNXPRUNE_PYTHON changes.
    persistent chosen
    remembered = '';
    if ispref('onnxprune', 'python')
        remembered = getpref('onnxprune', 'python');
    end
    key = sprintf('%s\n%s', remembered, getenv('ONNXPRUNE_PYTHON'));
    if ~isempty(chosen) && strcmp(chosen.key, key)
        python = chosen.python;
        return;
    end
    [python, origin] = configured(remembered);
    bridge = fileparts(fileparts(fileparts(mfilename('fullpath'))));  % .../matlab_bridge
    local = onnxprune.internal.venv();
    [ok, executable, runs, here] = probe(python, bridge);
    if isempty(python) || (~ok && ~isempty(local))
        % nothing configured, or a configured Python that cannot run onnxprune (a removed checkout)
        passed = '';
        if ~isempty(python)
            passed = sprintf('; the %s %s cannot run onnxprune', what(origin), python);
        end
        if ~isempty(local)
            [ok, executable, runs, here] = probe(local, bridge);
        end
        if ok
            [python, origin] = deal(local, ['this checkout''s .venv', passed]);
        elseif isempty(python)  % else the configured one stays, for the error that names it
            python = 'python3';
            origin = 'python3 on the path';
            [ok, executable, runs, here] = probe(python, bridge);
        end
    elseif ok && ~strcmp(runs, here) && ~isempty(local)
        [local_ok, local_executable, local_runs] = probe(local, bridge);
        if local_ok && strcmp(local_runs, here)
            origin = sprintf('this checkout''s .venv; the %s %s runs the onnxprune of %s', ...
                             what(origin), python, fileparts(runs));
            [python, executable, runs] = deal(local, local_executable, local_runs);
        end
    end
    if ~ok
        return;  % not remembered: the call itself fails with onnxprune:noPython and what to do
    end
    if any(python == '/') || any(python == '\')
        executable = python;  % the path as given: a venv's python, not the interpreter it links to
    end
    fprintf('onnxprune: using Python %s (%s; onnxprune.setup changes it)\n', executable, origin);
    if ~strcmp(runs, here)
        state = warning('off', 'backtrace');  % one line, as the errors are
        warning('onnxprune:otherCheckout', ['this Python runs the onnxprune of %s, not that of this ', ...
                'package (%s): onnxprune.setup(''Python'', ...) with this checkout''s Python'], ...
                fileparts(runs), fileparts(here));
        warning(state);
    end
    chosen = struct('key', key, 'python', python);
end

function [python, origin] = configured(remembered)
% The Python onnxprune.setup remembered, else $ONNXPRUNE_PYTHON; '' when neither is set.
    python = remembered;
    origin = 'from preferences';
    if isempty(python)
        python = getenv('ONNXPRUNE_PYTHON');
        origin = 'from ONNXPRUNE_PYTHON';
    end
end

function text = what(origin)
% 'remembered' or 'ONNXPRUNE_PYTHON' Python, for the line that says why another was used.
    if strcmp(origin, 'from preferences')
        text = 'remembered';
    else
        text = 'ONNXPRUNE_PYTHON';
    end
end

function [ok, executable, runs, here] = probe(python, bridge)
% Whether PYTHON imports onnxprune's bridge; its interpreter, the matlab_bridge folder it imports
% and this package's (both resolved by Python, so links and letter case compare equal).
    [ok, executable, runs, here] = deal(false, '', '', '');
    if isempty(python)
        return;
    end
    code = ['import os, sys, matlab_bridge; real = lambda p: os.path.normcase(os.path.realpath(p)); ', ...
            'print(sys.executable); print(real(os.path.dirname(matlab_bridge.__file__))); print(real(sys.argv[1]))'];
    [status, output] = system(sprintf('"%s" -c "%s" "%s" 2>&1', python, code, bridge));
    lines = regexp(strtrim(output), '\r?\n', 'split');
    if status ~= 0 || numel(lines) < 3
        return;
    end
    [ok, executable, runs, here] = deal(true, strtrim(lines{end - 2}), strtrim(lines{end - 1}), strtrim(lines{end}));
end
