"""SCRAM-SHA-256 verifiers computed client-side (the SQL itself: test_postgres_catalog.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from polyvm.recipes.postgres.roles import _keys, scram_matches, scram_verifier


def test_keys_match_rfc7677_test_vector():
    # RFC 7677 section 3: user "user", password "pencil"; the server signature proves ServerKey.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    stored, server = _keys("pencil", salt, 4096)
    auth = ("n=user,r=rOprNGfwEbeRWgbNEkqO,"
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    sig = hmac.new(server, auth.encode(), hashlib.sha256).digest()
    assert base64.b64encode(sig).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    client_sig = hmac.new(stored, auth.encode(), hashlib.sha256).digest()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, client_sig))
    assert hashlib.sha256(client_key).digest() == stored


def test_verifier_round_trip_and_random_salt():
    v = scram_verifier("a-long-password-1")
    assert v.startswith("SCRAM-SHA-256$4096:")
    assert scram_matches(v, "a-long-password-1")
    assert not scram_matches(v, "a-long-password-2")
    assert not scram_matches(None, "x") and not scram_matches("md5abc", "x") and not scram_matches("SCRAM-SHA-256$x", "x")
    assert scram_verifier("a-long-password-1") != v  # fresh salt each time
