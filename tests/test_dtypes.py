"""``lindit.dtypes``: the one table of dtype names and aliases, and its parser."""

import argparse

import pytest
import torch

from lindit.dtypes import ALIASES, DTYPES, MIXED_PRECISION, UnknownDtype, dtype_name, resolve_dtype


@pytest.mark.parametrize("text, name", [("float32", "float32"), ("fp32", "float32"), ("bfloat16", "bfloat16"),
                                        ("bf16", "bfloat16"), ("float16", "float16"), ("fp16", "float16"),
                                        ("half", "float16")])
def test_every_name_and_alias_parses_to_its_canonical_name(text, name):
    assert dtype_name(text) == name and resolve_dtype(text) is getattr(torch, name)


def test_the_tables_agree():
    assert set(ALIASES.values()) <= set(DTYPES) and not set(ALIASES) & set(DTYPES)
    assert all(DTYPES[name] is getattr(torch, name) for name in DTYPES)
    assert MIXED_PRECISION == {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("bad", ["float8", "Float32", "", "no"])
def test_a_bad_name_is_refused_in_one_line_naming_the_valid_ones(bad):
    with pytest.raises(UnknownDtype) as caught:
        dtype_name(bad)
    message = str(caught.value)
    assert message == f"unknown dtype {bad!r}; valid: float32 (fp32), bfloat16 (bf16), float16 (fp16, half)"
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, argparse.ArgumentTypeError)


def test_argparse_prints_the_parser_message(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", type=dtype_name)
    assert parser.parse_args(["--dtype", "bf16"]).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "fp8"])
    assert "argument --dtype: unknown dtype 'fp8'; valid: float32 (fp32)" in capsys.readouterr().err
