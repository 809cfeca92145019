function result = report(folder, varargin)
%REPORT Write one self-contained HTML page of a run folder (figures embedded); r.report is its path.
%   r = onnxprune.report('imp');  web(r.report)
%   Every run with data, sweep, sensitivity and bench with an OutDir write it themselves.
    result = onnxprune.internal.call('report', onnxprune.internal.absolute(folder), varargin);
end
