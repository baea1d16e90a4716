# W6A6: 6-bit weights, 6-bit activations for every quantized layer
# (read by PTQHook when its quant_cfg leaves the bits unset).
quant_bits = dict(w_bits=6, a_bits=6)
