# W8A8: 8-bit weights, 8-bit activations for every quantized layer
# (read by PTQHook when its quant_cfg leaves the bits unset).
quant_bits = dict(w_bits=8, a_bits=8)
