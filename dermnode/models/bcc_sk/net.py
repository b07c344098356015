"""The BCC-versus-seborrheic-keratosis network: an open_clip CLIP with CoOp prompt learning and a probe.

CoOp (Zhou et al., 2022): the class prompts are ``[V1]..[Vn] <class name>.``, where the context
vectors V are learnable and shared by both classes; the image and text encoders stay frozen; the
logits are the scaled cosine similarities between the image embedding and the two prompt embeddings.
A linear probe on the image embedding gives a second opinion; P(BCC) is the mean of both softmaxes.

Profiles: ``paper`` = open_clip ViT-B-16 with pretrained CLIP weights from a local file named by
the environment variable ``DERMNODE_CLIP_PRETRAINED`` (never downloaded); ``cpu`` = a small open_clip
configuration (ModifiedResNet image tower, 2-layer text transformer) whose encoders are trained here.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

CLASS_PROMPTS: tuple[str, str] = ("basal cell carcinoma", "seborrheic keratosis")  # index 0 = BCC
CONTEXT_INIT = "a dermoscopic image of"
PRETRAINED_ENV = "DERMNODE_CLIP_PRETRAINED"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: The ``cpu`` profile's open_clip configuration (no pretrained weights exist for it).
CPU_CLIP_CONFIG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 128, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
PAPER_MODEL = "ViT-B-16"


def build_clip(profile: str, pretrained: bool = True) -> nn.Module:
    """An open_clip CLIP for ``profile``; the ``paper`` profile loads the local pretrained file
    when ``pretrained`` (and fails plainly when it is not configured or absent)."""
    import open_clip

    if profile == "cpu":
        from open_clip.model import CLIP

        return CLIP(**CPU_CLIP_CONFIG)
    if profile != "paper":
        raise ValueError(f"unknown BCC/SK profile {profile!r}: use 'cpu' or 'paper'")
    if not pretrained:
        return open_clip.create_model(PAPER_MODEL, pretrained=None)
    return open_clip.create_model(PAPER_MODEL, pretrained=str(pretrained_path()))


def pretrained_path() -> Path:
    """The ViT-B-16 CLIP weight file from ``DERMNODE_CLIP_PRETRAINED``, checked to exist."""
    value = os.environ.get(PRETRAINED_ENV, "").strip()
    if not value:
        raise FileNotFoundError(
            f"the 'paper' BCC/SK profile needs pretrained ViT-B-16 CLIP weights: set {PRETRAINED_ENV} to a "
            "local open_clip checkpoint file (dermnode never downloads weights)"
        )
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{PRETRAINED_ENV}={value}: no such file; the 'paper' BCC/SK profile cannot load")
    return path


def image_size_of(clip: nn.Module) -> int:
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


class BccSkNet(nn.Module):
    """A CLIP plus CoOp context vectors and a linear probe."""

    def __init__(self, clip: nn.Module, n_ctx: int = 4) -> None:
        import open_clip

        super().__init__()
        self.clip = clip
        self.n_ctx = n_ctx
        context_length = clip.context_length
        placeholder = " ".join(["X"] * n_ctx)
        tokens = open_clip.tokenize([f"{placeholder} {name}." for name in CLASS_PROMPTS], context_length)
        self.register_buffer("prompt_tokens", tokens, persistent=False)
        init_tokens = open_clip.tokenize([CONTEXT_INIT], context_length)[0, 1 : 1 + n_ctx]
        with torch.no_grad():
            init = clip.token_embedding(init_tokens).clone()
        self.ctx = nn.Parameter(init)
        self.probe = nn.Linear(clip.text_projection.shape[1] if clip.text_projection is not None else 0, 2)
        self.image_size = image_size_of(clip)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def class_texts(self) -> list[str]:
        return [f"{name}." for name in CLASS_PROMPTS]

    def encode_image(self, rgb: torch.Tensor) -> torch.Tensor:
        """``rgb`` N x 3 x S x S in 0..1 -> unnormalised image embeddings."""
        return self.clip.encode_image((rgb - self.mean) / self.std)

    def encode_prompts(self, ctx: torch.Tensor | None) -> torch.Tensor:
        """Text embeddings of the two class prompts, with ``ctx`` (or the fixed init words) as context."""
        clip = self.clip
        x = clip.token_embedding(self.prompt_tokens)
        context = (ctx if ctx is not None else self.ctx.detach()).unsqueeze(0).expand(len(x), -1, -1)
        x = torch.cat([x[:, :1], context, x[:, 1 + self.n_ctx :]], dim=1)
        x = x + clip.positional_embedding
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        x = clip.ln_final(x)
        x = x[torch.arange(len(x)), self.prompt_tokens.argmax(dim=-1)]
        return x @ clip.text_projection

    def coop_logits(self, image_embedding: torch.Tensor) -> torch.Tensor:
        text = F.normalize(self.encode_prompts(self.ctx), dim=-1)
        return self.clip.logit_scale.exp() * F.normalize(image_embedding, dim=-1) @ text.T

    def probe_logits(self, image_embedding: torch.Tensor) -> torch.Tensor:
        return self.probe(F.normalize(image_embedding, dim=-1))

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encode_image(rgb)
        return self.coop_logits(embedding), self.probe_logits(embedding)

    def bcc_probability(self, rgb: torch.Tensor) -> torch.Tensor:
        coop, probe = self(rgb)
        return 0.5 * (torch.softmax(coop, dim=1)[:, 0] + torch.softmax(probe, dim=1)[:, 0])

    def freeze_encoders(self) -> None:
        """CoOp: only the context vectors and the probe learn."""
        for parameter in self.clip.parameters():
            parameter.requires_grad_(False)
        self.ctx.requires_grad_(True)
        for parameter in self.probe.parameters():
            parameter.requires_grad_(True)

    def cam_layer(self) -> nn.Module:
        """The Grad-CAM target: for a ModifiedResNet its third stage (8x8 at 128 px, where the last
        stage would give only 4x4), for a ViT the last transformer block."""
        visual = self.clip.visual
        if hasattr(visual, "layer3"):
            return visual.layer3
        return visual.transformer.resblocks[-1]

    def grad_cam(self, rgb: torch.Tensor) -> torch.Tensor:
        """Grad-CAM of P(BCC) on one image (1 x 3 x S x S): a grid map in [0, 1] (h x w)."""
        captured: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            output.retain_grad()
            captured["features"] = output

        handle = self.cam_layer().register_forward_hook(hook)
        try:
            with torch.enable_grad():
                rgb = rgb.clone().requires_grad_(True)  # gradients reach the features even when frozen
                score = torch.logit(self.bcc_probability(rgb).clamp(1e-6, 1 - 1e-6)).sum()
                score.backward()
        finally:
            handle.remove()
        features, grads = captured["features"].detach(), captured["features"].grad.detach()
        if features.dim() == 3:  # ViT tokens (N, tokens, width): drop the class token, fold into a grid
            side = int(round((features.shape[1] - 1) ** 0.5))
            features = features[:, 1:].transpose(1, 2).reshape(features.shape[0], -1, side, side)
            grads = grads[:, 1:].transpose(1, 2).reshape(grads.shape[0], -1, side, side)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * features).sum(dim=1))[0]
        peak = cam.max()
        return cam / peak if peak > 0 else cam
