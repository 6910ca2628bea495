"""The next-token loss (minigptv2/losses.py): position t's logits score the label at t + 1, IGNORE labels count
nothing, and the reductions agree with each other."""
import torch

from minigptv2.losses import next_token_loss
from minigptv2.processor import IGNORE


def test_next_token_loss_scores_the_following_label_and_skips_ignored_ones():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, dtype=torch.bfloat16)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 10], [IGNORE, 7, 1, IGNORE, IGNORE]])
    per_token = next_token_loss(logits, labels, reduction="none")
    logp = logits.float().log_softmax(-1)
    want = torch.zeros(2, 4)
    for b, t in [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]:
        want[b, t] = -logp[b, t, labels[b, t + 1]]
    assert per_token.dtype == torch.float32 and per_token.shape == (2, 4)
    torch.testing.assert_close(per_token, want)
    torch.testing.assert_close(next_token_loss(logits, labels), want.sum())
    torch.testing.assert_close(next_token_loss(logits, labels, reduction="mean"), want.sum() / 5)
