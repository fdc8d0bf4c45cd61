"""StyleGAN2-ADA generator and discriminator (Karras et al. 2020), with the official class and attribute layout.

Mixed precision (the `num_fp16_res` highest-resolution blocks in fp16) is a CUDA speed-up. On a CPU those blocks
run in bfloat16 when `cpu_bfloat16` is set (train.py's default on CPUs with native bfloat16) and in fp32
otherwise, so the same network trains and samples on any device.
"""

import contextlib
import math

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

# ----------------------------------------------------------------------------
# Resolution contract shared by G and D: a power of two, at least 4.


def check_resolution(resolution, minimum=4):
    """Validates an image resolution for the networks.

    Args:
        resolution: Output (G) or input (D) image width and height in pixels.
        minimum: Smallest accepted resolution (G: 4, D: 8, since D needs one block before its 4x4 head).

    Returns:
        The resolution as a Python int.

    Raises:
        ValueError: If it is not a power of two or is below `minimum`.
    """
    if int(resolution) != resolution or resolution < minimum or int(resolution) & (int(resolution) - 1):
        raise ValueError(f'img_resolution must be a power of two >= {minimum}, got {resolution}')
    return int(resolution)


# ----------------------------------------------------------------------------
# Dtype of one block: when asked for low precision, fp16 on a CUDA device and bfloat16 on a CPU if cpu_bfloat16 is
# set (process-wide, like torch.backends.cuda.matmul.allow_tf32, but only inside `bfloat16_on_cpu`, which the
# training loop enters); else full precision, which is the weights' dtype (float32, or float64 in exactness
# tests). bfloat16 has fp32's range, so fp16's overflow guards are not needed.

cpu_bfloat16 = False


@contextlib.contextmanager
def bfloat16_on_cpu(enabled=True):
    global cpu_bfloat16
    previous, cpu_bfloat16 = cpu_bfloat16, bool(enabled)
    try:
        yield
    finally:
        cpu_bfloat16 = previous


def _block_dtype(use_fp16, force_fp32, device, full=torch.float32):
    if not use_fp16 or force_fp32:
        return full
    if device.type == 'cuda':
        return torch.float16
    return torch.bfloat16 if device.type == 'cpu' and cpu_bfloat16 else full


# ----------------------------------------------------------------------------
# Fused (grouped-conv) vs. separate modulation when the caller does not say. On CPU (fp32) the separate path's
# single shared-weight conv measured faster at every batch size (1-16, training and inference); on CUDA we keep
# upstream's rule (fused for inference in fp32 or at batch 1).


def _prefer_fused_modconv(training, dtype, batch_size, device):
    if device.type != 'cuda':
        return False
    return (not training) and (dtype == torch.float32 or batch_size == 1)


# ----------------------------------------------------------------------------
# Pixel norm: scale each vector to unit second moment (StyleGAN, Karras et al. 2019).


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Divides `x` by the root mean square along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ----------------------------------------------------------------------------
# Weight (de)modulation, StyleGAN2 Eq. 1-3: either scale activations around one shared-weight conv, or build
# per-sample weights and run them as a grouped conv ("fused").


# fmt: off
@misc.profiled_function
def modulated_conv2d(
    x,                          # Input tensor of shape [batch_size, in_channels, in_height, in_width].
    weight,                     # Weight tensor of shape [out_channels, in_channels, kernel_height, kernel_width].
    styles,                     # Modulation coefficients of shape [batch_size, in_channels].
    noise           = None,     # Optional noise tensor to add to the output activations.
    up              = 1,        # Integer upsampling factor.
    down            = 1,        # Integer downsampling factor.
    padding         = 0,        # Padding with respect to the upsampled image.
    resample_filter = None,     # Low-pass filter to apply when resampling activations.
    demodulate      = True,     # Apply weight demodulation?
    flip_weight     = True,     # False = convolution, True = correlation (matches torch.nn.functional.conv2d).
    fused_modconv   = True,     # Perform modulation, convolution, and demodulation as a single fused operation?
):
# fmt: on
    """Modulated convolution of StyleGAN2; returns [batch_size, out_channels, out_height, out_width]."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kh, kw])
    misc.assert_shape(x, [None, in_channels, None, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    if x.dtype == torch.float16 and demodulate:  # Rescale first so fp16 cannot overflow; demodulation undoes it.
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    dcoefs = None
    if demodulate:  # sum_{i,k} (s_ni w_oik)^2 = sum_i s_ni^2 sum_k w_oik^2: a matmul, no [NOIkk] tensor.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [NO]

    conv_kwargs = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), **conv_kwargs)
        if demodulate and noise is not None:
            return fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        return x.add_(noise.to(x.dtype)) if noise is not None else x

    scale = styles.reshape(batch_size, 1, -1, 1, 1)  # [N1I11]
    if demodulate:
        scale = scale * dcoefs.reshape(batch_size, -1, 1, 1, 1)  # [NOI11]: one pass over the big [NOIkk] below.
    w = weight.unsqueeze(0) * scale  # [NOIkk]
    x = x.reshape(1, -1, *x.shape[2:])  # Batch folded into channels: one group per sample.
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), groups=batch_size, **conv_kwargs)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    return x.add_(noise.to(x.dtype)) if noise is not None else x


# ----------------------------------------------------------------------------
# Dense layer with equalized learning rate (ProGAN): weights stored at unit scale, gain applied at run time.


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias            = True,     # Apply additive bias before the activation function?
        activation      = 'linear', # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier   = 1,        # Learning rate multiplier.
        bias_init       = 0,        # Initial value for the additive bias.
    ):
        # fmt: on
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)


# ----------------------------------------------------------------------------
# Convolution with equalized learning rate, optional FIR up/down-sampling, bias, activation and clamping.


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the convolution kernel.
        bias            = True,         # Apply additive bias before the activation function?
        activation      = 'linear',     # Activation function: 'relu', 'lrelu', etc.
        up              = 1,            # Integer upsampling factor.
        down            = 1,            # Integer downsampling factor.
        resample_filter = (1, 3, 3, 1), # Low-pass filter to apply when resampling activations.
        conv_clamp      = None,         # Clamp the output to +-X, None = disable clamping.
        channels_last   = False,        # Expect the input to have memory_format=channels_last?
        trainable       = True,         # Update the weights of this layer during training?
    ):
        # fmt: on
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size**2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias)

    def forward(self, x, gain=1):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = self.up == 1  # Transposed conv (up > 1) needs the kernel flipped to stay a correlation.
        x = conv2d_resample.conv2d_resample(
            x=x,
            w=w.to(x.dtype),
            f=self.resample_filter,
            up=self.up,
            down=self.down,
            padding=self.padding,
            flip_weight=flip_weight,
        )
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)


# ----------------------------------------------------------------------------
# Mapping network z (+ embedded label c) -> w, with the running w_avg used for truncation.


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        z_dim,                      # Input latent (Z) dimensionality, 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality, 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of intermediate latents to output, None = do not broadcast.
        num_layers      = 8,        # Number of mapping layers.
        embed_features  = None,     # Label embedding dimensionality, None = same as w_dim.
        layer_features  = None,     # Number of intermediate features in the mapping layers, None = same as w_dim.
        activation      = 'lrelu',  # Activation function: 'relu', 'lrelu', etc.
        lr_multiplier   = 0.01,     # Learning rate multiplier for the mapping layers.
        w_avg_beta      = 0.995,    # Decay for tracking the moving average of W during training, None = do not track.
    ):
        # fmt: on
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features_list = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features_list[idx], features_list[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        x = self._embed_inputs(z, c)
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)
        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self._truncate(x, truncation_psi, truncation_cutoff)
        return x

    def _embed_inputs(self, z, c):
        # Each input is normalised on its own so neither dominates the concatenation.
        parts, dtype = [], self.fc0.weight.dtype
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            parts.append(normalize_2nd_moment(z.to(dtype)))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            parts.append(normalize_2nd_moment(self.embed(c.to(dtype))))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _truncate(self, x, truncation_psi, truncation_cutoff):
        assert self.w_avg_beta is not None, 'truncation needs the tracked w_avg'
        if truncation_cutoff is None:
            return self.w_avg.lerp(x, truncation_psi)
        x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


# ----------------------------------------------------------------------------
# One style-modulated 3x3 conv of the synthesis network, with per-pixel noise, bias and activation.


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        w_dim,                          # Intermediate latent (W) dimensionality.
        resolution,                     # Resolution of this layer.
        kernel_size     = 3,            # Convolution kernel size.
        up              = 1,            # Integer upsampling factor.
        use_noise       = True,         # Enable noise input?
        activation      = 'lrelu',      # Activation function: 'relu', 'lrelu', etc.
        resample_filter = (1, 3, 3, 1), # Low-pass filter to apply when resampling activations.
        conv_clamp      = None,         # Clamp the output of convolution layers to +-X, None = disable clamping.
        channels_last   = False,        # Use channels_last format for the weights?
    ):
        # fmt: on
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        self.weight = torch.nn.Parameter(weight)
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        assert noise_mode in ['random', 'const', 'none']
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], in_resolution, in_resolution])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        if self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        flip_weight = self.up == 1  # slightly faster
        x = modulated_conv2d(
            x=x,
            weight=self.weight,
            styles=styles,
            noise=noise,
            up=self.up,
            padding=self.padding,
            resample_filter=self.resample_filter,
            flip_weight=flip_weight,
            fused_modconv=fused_modconv,
        )
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)


# ----------------------------------------------------------------------------
# Modulated (not demodulated) 1x1 projection from features to image channels.


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size**2))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


# ----------------------------------------------------------------------------
# One resolution of the synthesis network: (const | 2x up-conv) -> conv -> optional ToRGB, in orig/skip/resnet.


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        in_channels,                        # Number of input channels, 0 = first block.
        out_channels,                       # Number of output channels.
        w_dim,                              # Intermediate latent (W) dimensionality.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of output color channels.
        is_last,                            # Is this the last block?
        architecture        = 'skip',       # Architecture: 'orig', 'skip', 'resnet'.
        resample_filter     = (1, 3, 3, 1), # Low-pass filter to apply when resampling activations.
        conv_clamp          = None,         # Clamp the output of convolution layers to +-X, None = disable clamping.
        use_fp16            = False,        # Use FP16 for this block (CUDA only)?
        fp16_channels_last  = False,        # Use channels-last memory format with FP16?
        **layer_kwargs,                     # Arguments for SynthesisLayer.
    ):
        # fmt: on
        assert architecture in ['orig', 'skip', 'resnet']
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        common = dict(conv_clamp=conv_clamp, channels_last=self.channels_last)

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(
                in_channels,
                out_channels,
                w_dim=w_dim,
                resolution=resolution,
                up=2,
                resample_filter=resample_filter,
                **common,
                **layer_kwargs,
            )
            self.num_conv += 1
        self.conv1 = SynthesisLayer(
            out_channels, out_channels, w_dim=w_dim, resolution=resolution, **common, **layer_kwargs
        )
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, **common)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(
                in_channels,
                out_channels,
                kernel_size=1,
                bias=False,
                up=2,
                resample_filter=resample_filter,
                channels_last=self.channels_last,
            )

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, force_fp32, ws.device)
        channels_last = self.channels_last and dtype == torch.float16
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = _prefer_fused_modconv(self.training, dtype, ws.shape[0], ws.device)

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img


# ----------------------------------------------------------------------------
# Synthesis network: ws [N, num_ws, w_dim] -> image [N, img_channels, R, R], one block per resolution 4..R.


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output image resolution.
        img_channels,               # Number of color channels.
        channel_base    = 32768,    # Overall multiplier for the number of channels.
        channel_max     = 512,      # Maximum number of channels in any layer.
        num_fp16_res    = 0,        # Use FP16 for the N highest resolutions (CUDA only).
        **block_kwargs,             # Arguments for SynthesisBlock.
    ):
        # fmt: on
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = check_resolution(img_resolution)
        self.img_resolution_log2 = int(np.log2(self.img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            is_last = res == self.img_resolution
            block = SynthesisBlock(
                in_channels,
                channels_dict[res],
                w_dim=w_dim,
                resolution=res,
                img_channels=img_channels,
                is_last=is_last,
                use_fp16=(res >= fp16_resolution),
                **block_kwargs,
            )
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            # Consecutive blocks share one w: a block's ToRGB reads the w of the next block's first conv.
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, **block_kwargs)
        return img


# ----------------------------------------------------------------------------
# Generator: mapping + synthesis, G(z, c) -> image in about [-1, 1].


@persistence.persistent_class
class Generator(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality (one-hot or multi-hot), 0 = none.
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output resolution.
        img_channels,               # Number of output color channels.
        mapping_kwargs      = {},   # noqa: B006 - Arguments for MappingNetwork.
        synthesis_kwargs    = {},   # noqa: B006 - Arguments for SynthesisNetwork.
    ):
        # fmt: on
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = check_resolution(img_resolution)
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(
            w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)


# ----------------------------------------------------------------------------
# One resolution of the discriminator: (fromRGB) -> conv -> 2x down-conv, in orig/skip/resnet.


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        in_channels,                        # Number of input channels, 0 = first block.
        tmp_channels,                       # Number of intermediate channels.
        out_channels,                       # Number of output channels.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of input color channels.
        first_layer_idx,                    # Index of the first layer.
        architecture        = 'resnet',     # Architecture: 'orig', 'skip', 'resnet'.
        activation          = 'lrelu',      # Activation function: 'relu', 'lrelu', etc.
        resample_filter     = (1, 3, 3, 1), # Low-pass filter to apply when resampling activations.
        conv_clamp          = None,         # Clamp the output of convolution layers to +-X, None = disable clamping.
        use_fp16            = False,        # Use FP16 for this block (CUDA only)?
        fp16_channels_last  = False,        # Use channels-last memory format with FP16?
        freeze_layers       = 0,            # Freeze-D: Number of layers to freeze.
    ):
        # fmt: on
        assert in_channels in [0, tmp_channels]
        assert architecture in ['orig', 'skip', 'resnet']
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_layers = 0

        def layer(*args, **kwargs):  # Layers below freeze_layers (counted across blocks) are frozen.
            trainable = first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return Conv2dLayer(*args, trainable=trainable, channels_last=self.channels_last, **kwargs)

        act = dict(activation=activation, conv_clamp=conv_clamp)
        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = layer(img_channels, tmp_channels, kernel_size=1, **act)
        self.conv0 = layer(tmp_channels, tmp_channels, kernel_size=3, **act)
        self.conv1 = layer(tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter, **act)
        if architecture == 'resnet':
            self.skip = layer(
                tmp_channels, out_channels, kernel_size=1, bias=False, down=2, resample_filter=resample_filter
            )

    def forward(self, x, img, force_fp32=False):
        device = x.device if x is not None else img.device
        dtype = _block_dtype(self.use_fp16, force_fp32, device, full=self.conv0.weight.dtype)
        channels_last = self.channels_last and dtype == torch.float16
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv1(self.conv0(x))
        assert x.dtype == dtype
        return x, img


# ----------------------------------------------------------------------------
# Minibatch standard deviation (ProGAN): appends the group-wise feature stddev as extra channels.


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        N, C, H, W = x.shape
        G = min(self.group_size, N) if self.group_size is not None else N
        G = math.gcd(N, G)  # Unlike upstream, a batch that G does not divide uses the largest divisor below G.
        F = self.num_channels
        c = C // F
        y = x.reshape(G, -1, F, c, H, W)  # [GnFcHW] sample n of each group.
        y = y - y.mean(dim=0)  # [GnFcHW]
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [nFcHW] stddev over the group.
        y = y.mean(dim=[2, 3, 4]).reshape(-1, F, 1, 1)  # [nF11]
        y = y.repeat(G, 1, H, W)  # [NFHW]
        return torch.cat([x, y], dim=1)


# ----------------------------------------------------------------------------
# Discriminator head at 4x4: mbstd -> conv -> fc -> out, with projection onto the label embedding (cmap).


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        in_channels,                    # Number of input channels.
        cmap_dim,                       # Dimensionality of mapped conditioning label, 0 = no label.
        resolution,                     # Resolution of this block.
        img_channels,                   # Number of input color channels.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        mbstd_group_size    = 4,        # Group size for the minibatch stddev layer, None = entire minibatch.
        mbstd_num_channels  = 1,        # Number of features for the minibatch standard deviation layer, 0 = disable.
        activation          = 'lrelu',  # Activation function: 'relu', 'lrelu', etc.
        conv_clamp          = None,     # Clamp the output of convolution layers to +-X, None = disable clamping.
    ):
        # fmt: on
        assert architecture in ['orig', 'skip', 'resnet']
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(
            in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation, conv_clamp=conv_clamp
        )
        self.fc = FullyConnectedLayer(in_channels * (resolution**2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        dtype = self.fc.weight.dtype
        x = x.to(dtype=dtype, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            x = x + self.fromrgb(img.to(dtype=dtype, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:  # Projection discriminator (Miyato & Koyama 2018).
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        assert x.dtype == dtype
        return x


# ----------------------------------------------------------------------------
# Discriminator: image [N, C, R, R] (+ label c) -> logits [N, 1]. Labels reach D through a small mapping
# network (default: embed + 1 layer, not upstream's 8), enough for one-hot or multi-hot clinical labels.


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    # fmt: off
    def __init__(
        self,
        c_dim,                          # Conditioning label (C) dimensionality, 0 = none.
        img_resolution,                 # Input resolution.
        img_channels,                   # Number of input color channels.
        architecture        = 'resnet', # Architecture: 'orig', 'skip', 'resnet'.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 0,        # Use FP16 for the N highest resolutions (CUDA only).
        conv_clamp          = None,     # Clamp the output of convolution layers to +-X, None = disable clamping.
        cmap_dim            = None,     # Dimensionality of mapped conditioning label, None = default.
        block_kwargs        = {},       # noqa: B006 - Arguments for DiscriminatorBlock.
        mapping_kwargs      = {},       # noqa: B006 - Arguments for MappingNetwork (default num_layers=1).
        epilogue_kwargs     = {},       # noqa: B006 - Arguments for DiscriminatorEpilogue.
    ):
        # fmt: on
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = check_resolution(img_resolution, minimum=8)
        self.img_resolution_log2 = int(np.log2(self.img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels_dict[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res] if res < self.img_resolution else 0
            block = DiscriminatorBlock(
                in_channels,
                channels_dict[res],
                channels_dict[res // 2],
                resolution=res,
                first_layer_idx=cur_layer_idx,
                use_fp16=(res >= fp16_resolution),
                **block_kwargs,
                **common,
            )
            setattr(self, f'b{res}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            mapping_kwargs = {'num_layers': 1, **mapping_kwargs}
            self.mapping = MappingNetwork(
                z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs
            )
        self.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

    def forward(self, img, c, **block_kwargs):
        misc.assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)


# ----------------------------------------------------------------------------
