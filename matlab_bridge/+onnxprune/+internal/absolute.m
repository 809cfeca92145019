function path = absolute(path)
%ABSOLUTE A path relative to MATLAB's working folder made absolute (Python's folder may differ).
    if iscell(path)
        path = cellfun(@onnxprune.internal.absolute, path, 'UniformOutput', false);
        return;
    end
    if ~(numel(path) > 0 && (path(1) == '/' || path(1) == '\' || (numel(path) > 1 && path(2) == ':')))
        path = fullfile(pwd, path);
    end
end
