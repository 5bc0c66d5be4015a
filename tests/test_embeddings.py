"""The embedding contract (FaceModel.embedding_dim / embed) and inference.embeddings."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from facecls.data.batches import BatchPreparer
from facecls.data.preprocess import Preprocess
from facecls.errors import UserError
from facecls.inference.embeddings import embed_images, embed_split
from facecls.inference.evaluate import EvalSettings
from facecls.models.convnet import ConvNet
from facecls.models.mlp import MLP

CPU = torch.device("cpu")


def _images(n: int = 5, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_classifier_embed_is_the_penultimate_activation():
    torch.manual_seed(0)
    model = ConvNet(4, input_size=16, channels=[4], fc=[10]).eval()
    x = torch.randn(3, 3, 16, 16)
    # by hand: everything before the last Linear of the classifier
    penultimate = model.classifier[:-1](model.features(x))
    assert model.embedding_dim is None
    assert torch.equal(model.embed(x), penultimate)
    assert model.embed(x).shape == (3, 10)


def test_mlp_classifier_embed_is_its_last_hidden_layer():
    torch.manual_seed(0)
    model = MLP(3, input_size=8, hidden=[7, 5]).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model.embed(x), model.layers[:-1](x))


@pytest.mark.parametrize("build", [lambda: ConvNet(6, input_size=16, channels=[4], embedding_dim=12),
                                   lambda: MLP(6, input_size=8, hidden=[9], embedding_dim=12)])
def test_embedding_model_forward_is_the_embedding(build):
    model = build()
    size = 16 if isinstance(model, ConvNet) else 8
    x = torch.randn(4, 3, size, size)
    assert model.embedding_dim == 12
    assert model(x).shape == (4, 12)  # no class logits: the loss head makes those
    model.eval()
    assert torch.equal(model.embed(x), model(x))
    model.train()
    assert model(x[:1]).shape == (1, 12)  # a training batch of one image still runs (BatchNorm)


def test_bad_embedding_dim_is_one_line():
    with pytest.raises(UserError, match="model.embedding_dim=0"):
        ConvNet(3, input_size=16, embedding_dim=0)


def test_a_model_without_a_linear_layer_has_no_embedding():
    class Conv(ConvNet):
        def classifier_layer(self):
            return super(ConvNet, self).classifier_layer()

    model = Conv(3, input_size=16, channels=[4])
    model.classifier = nn.Flatten()
    with pytest.raises(UserError, match="no linear classification layer"):
        model.embed(torch.randn(1, 3, 16, 16))


def test_embed_images_is_normalised_batched_and_flip_fuses_the_mirror():
    torch.manual_seed(0)
    model = ConvNet(4, input_size=16, channels=[4], fc=[10], embedding_dim=6).eval()
    prepare = BatchPreparer(Preprocess(size=16), CPU)
    images = _images(5)
    settings = EvalSettings(CPU, batch_size=2)
    emb = embed_images(model, images, prepare, settings)
    assert emb.shape == (5, 6) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    whole = embed_images(model, images, prepare, EvalSettings(CPU, batch_size=64))
    assert torch.allclose(emb, whole, atol=1e-6)  # batching changes nothing
    x = prepare(images)
    expected = torch.nn.functional.normalize(model(x) + model(x.flip(-1)), dim=1)
    assert torch.allclose(embed_images(model, images, prepare, settings, flip=True), expected, atol=1e-5)
    mirrored = embed_images(model, images.flip(-1), prepare, settings, flip=True)
    assert torch.allclose(mirrored, expected, atol=1e-5)  # flip-fused embeddings ignore mirroring


def test_embed_split_keeps_the_models_mode():
    model = MLP(3, input_size=16, hidden=[8]).train()

    class S:
        inputs = _images(3)
        labels = torch.zeros(3, dtype=torch.long)

    emb = embed_split(model, S(), BatchPreparer(Preprocess(size=16), CPU), EvalSettings(CPU))
    assert emb.shape == (3, 8) and model.training


def test_finetune_embedding_neck_takes_the_classifiers_place(no_downloads):
    from facecls.models.finetune import Finetune

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    net = Finetune(5, name="resnet18", weights=None, pretrained=False, input_size=32, embedding_dim=8).eval()
    assert net.embedding_dim == 8 and net(x).shape == (2, 8)
    neck = net.net.get_submodule(net.classifier_name)
    first = net.param_groups(0.1)[0]  # the neck is the new "classifier": first group, the full learning rate
    assert first["lr"] == 0.1 and {id(p) for p in first["params"]} == {id(p) for p in neck.parameters()}
    classifier = Finetune(5, name="resnet18", weights=None, pretrained=False, input_size=32).eval()
    body = classifier.net
    pooled = body.avgpool(body.layer4(body.layer3(body.layer2(body.layer1(body.maxpool(body.relu(body.bn1(
        body.conv1(x)))))))))
    assert torch.allclose(classifier.embed(x), pooled.flatten(1))  # the input of the replaced fc
