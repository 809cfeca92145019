function net = importPruned(file, varargin)
%IMPORTPRUNED Import a pruned ONNX file into MATLAB (Deep Learning Toolbox).
%   net = onnxprune.importPruned('pruned.onnx')
%   Uses importNetworkFromONNX (R2023b and later), else importONNXNetwork. Extra arguments go
%   to the importer.
    if exist('OCTAVE_VERSION', 'builtin')
        error('onnxprune:noMATLAB', 'importing ONNX networks needs MATLAB''s Deep Learning Toolbox');
    end
    if exist('importNetworkFromONNX', 'file')
        net = importNetworkFromONNX(file, varargin{:});
    elseif exist('importONNXNetwork', 'file')
        net = importONNXNetwork(file, 'OutputLayerType', 'classification', varargin{:});
    else
        error('onnxprune:noMATLAB', 'Deep Learning Toolbox Converter for ONNX Model Format is not installed');
    end
end
