function python = venv()
%VENV This checkout's virtual environment Python (.venv beside matlab_bridge), '' when it has none.
    checkout = fileparts(fileparts(fileparts(fileparts(mfilename('fullpath')))));
    python = '';
    candidates = {fullfile(checkout, '.venv', 'bin', 'python'), fullfile(checkout, '.venv', 'Scripts', 'python.exe')};
    for k = 1:numel(candidates)
        if exist(candidates{k}, 'file') == 2
            python = candidates{k};
            return;
        end
    end
end
