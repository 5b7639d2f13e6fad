"""The devstack's Workers AI stand-in accepts whatever random token `make run` generated."""

from __future__ import annotations

import pytest

from devstack.stack import standin_child
from fakes.cli import _parser


@pytest.mark.parametrize("token", ["-starts-with-a-dash_0123456789", "plain_0123456789", "--x"])
def test_the_standin_gets_its_token_whatever_its_first_character(token: str) -> None:
    child = standin_child({"CLOUDFLARE_API_TOKEN": token})
    args = _parser().parse_args(list(child.args))
    assert args.tokens == [token]
