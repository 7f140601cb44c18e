"""Fixtures of the data tests: one small synthetic dataset per format (session-scoped, tiny images)."""
import pytest

SIZES = {"freihand": 96, "ho3d": (320, 240), "ho3d-official": (320, 240), "dexycb": (320, 240)}


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """format -> (root, summary); generated on first use."""
    from handS3C.data.synthetic import make_synthetic
    cache = {}

    def get(fmt):
        if fmt not in cache:
            root = tmp_path_factory.mktemp(fmt.replace("-", "_"))
            summary = make_synthetic(fmt, root, 3, seed=7, image_size=SIZES[fmt], n_eval=2, progress=False)
            cache[fmt] = (str(root), summary)
        return cache[fmt]
    return get


@pytest.fixture(scope="session")
def mano_layer(synth):
    from handS3C.model.mano import ManoLayer
    root, summary = synth("ho3d")
    return ManoLayer(summary["mano_model_path"]).double().eval()
