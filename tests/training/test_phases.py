"""The D phases' step is built from a class_name config, and a step with state joins resume_state."""

import pickle

from training import phases
from training import training_loop as tl


class CountingStep(phases.PhaseStep):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        super().__call__(*args)

    def state_dict(self):
        return dict(calls=self.calls)

    def load_state_dict(self, state):
        self.calls = state['calls']


def test_custom_D_step_replaces_the_standard_one(tiny_dataset, tiny_training_kwargs, tmp_path, monkeypatch):
    monkeypatch.setattr(phases, 'CountingStep', CountingStep, raising=False)
    data = tiny_dataset(path=tmp_path / 'd.zip')
    step = dict(class_name='training.phases.CountingStep')
    kwargs = tiny_training_kwargs(tmp_path / 'run', data, D_step_kwargs=step, total_kimg=0.024)
    tl.training_loop(**kwargs)
    with open(tmp_path / 'run' / 'network-snapshot-000000.024.pkl', 'rb') as f:
        state = pickle.load(f)['resume_state']
    assert state['step/Dmain'] == dict(calls=6)  # 24 images in batches of 4.
    assert state['step/Dreg'] == dict(calls=2)  # Every 3rd batch (D_reg_interval=3).
    assert 'step/Gmain' not in state
