function result = plot(kind, sources, varargin)
%PLOT Draw a figure (PNG) from saved results or models; r.figure is its path.
%   r = onnxprune.plot('layers', 'pruned.onnx', 'Output', 'layers.png');  imshow(r.figure)
%   r = onnxprune.plot('accuracy', {'run1', 'run2'}, 'Output', 'acc.png')
%   Kinds: accuracy, pareto, mask, layers, filters (two models), training, taylor, gamma.
    if ischar(sources)
        sources = {sources};
    end
    result = onnxprune.internal.call('plot', onnxprune.internal.absolute(sources), [{'Kind', kind}, varargin]);
end
