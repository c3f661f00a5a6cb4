"""A fake Petals chat backend (petals-infra/chat.petals.dev) serving its HTTP API.

    POST /api/v1/generate   form fields (Flask's `request.values`: query string + form body; a JSON
                            body is not read): model, inputs, max_length, max_new_tokens, do_sample
                            (0/1), temperature, top_k, top_p, repetition_penalty
                            -> {"ok": true, "outputs": "..."}
                            -> {"ok": false, "traceback": "Traceback ..."} with HTTP 200 on any failure

As in the real backend, the outputs are the decoded new tokens, special tokens included: an answer
that ended by itself carries the end-of-sequence `</s>`; one cut by max_new_tokens does not. The fake
tokenizer counts whitespace-separated words; a session holds MAX_LENGTH tokens. The answer is
`" " + petals_answer(inputs)`. `TRIGGER_502` in the inputs makes a proxy's HTML 502 page.
"""

import re
from urllib.parse import parse_qs

from tests.fakes.http import FakeHandler
from tests.fakes.http import FakeServer

MODELS = ("petals-team/StableBeluga2", "meta-llama/Llama-2-70b-chat-hf")
MAX_LENGTH = 2048
EOS = "</s>"


def petals_answer(inputs):
    """The text the fake generates for a prompt (before the leading space and `</s>`)."""
    return f"Hello from fake Petals! Your prompt had {len(inputs.split())} words."


def traceback(line, error):
    """A Python traceback as the backend's `format_exc()` renders it."""
    return ("Traceback (most recent call last):\n"
            '  File "/home/petals/chat.petals.dev/http_api.py", line 66, in http_api_generate\n'
            f"    {line}\n{error}\n")


class Failure(Exception):
    """A failure inside the backend's try block: answered as ok: false."""


class Handler(FakeHandler):
    """One request to the fake Petals backend."""

    server_version = "gunicorn"

    def route(self, method, path, query, headers, body):
        if (method, path) != ("POST", "/api/v1/generate"):
            page = b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
            return self.send_json(404 if path != "/api/v1/generate" else 405, page, content_type="text/html")
        values = dict(query)
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            raw = body if isinstance(body, bytes) else b""
            values.update({k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()})
        if "TRIGGER_502" in values.get("inputs", ""):
            page = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad " \
                   b"Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            return self.send_json(502, page, content_type="text/html")
        try:
            outputs = self.generate(values)
        except Failure as exc:
            return self.send_json(200, {"ok": False, "traceback": str(exc)})
        self.send_json(200, {"ok": True, "outputs": outputs})

    def generate(self, values):
        def typed(name, kind, default=None):
            value = values.get(name, default)
            try:
                return kind(value) if value is not None else None
            except ValueError:
                raise Failure(traceback(f"{name} = get_typed_arg({name!r}, {kind.__name__})",
                                        f"ValueError: invalid literal for {kind.__name__}() with base 10: "
                                        f"{value!r}" if kind is int else
                                        f"ValueError: could not convert string to float: {value!r}")) from None

        model = typed("model", str, MODELS[0])
        inputs = values.get("inputs")
        typed("do_sample", int, 0)
        typed("temperature", float, 1.0)
        typed("top_k", int)
        typed("top_p", float)
        max_length = typed("max_length", int)
        max_new_tokens = typed("max_new_tokens", int)
        self.server.fake.generated.append({k: values.get(k) for k in ("model", "do_sample", "temperature")})
        if model not in MODELS:
            raise Failure(traceback("model, tokenizer = models[model_name]", f"KeyError: {model!r}"))
        if max_length is None and max_new_tokens is None:
            raise Failure(traceback("outputs = model.generate(", "ValueError: You need to specify either "
                                    "max_length or max_new_tokens"))
        if inputs is None:
            raise Failure(traceback("outputs = model.generate(", "ValueError: No inputs given and no "
                                    "inference session to continue"))
        n_inputs = len(inputs.split())
        budget = max_new_tokens if max_new_tokens is not None else max_length - n_inputs
        if n_inputs + budget > MAX_LENGTH:
            raise Failure(traceback("outputs = model.generate(", "ValueError: Maximum length exceeded: prefix 0 "
                                    f"+ current {n_inputs + budget} exceeds pre-allocated maximum {MAX_LENGTH}"))
        tokens = re.findall(r"\s*\S+", " " + petals_answer(inputs)) + [EOS]
        return "".join(tokens[:max(budget, 0)])


class FakePetals(FakeServer):
    """The fake Petals backend; `generated` keeps the typed fields of each generate call."""

    handler = Handler

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.generated = []

    def reset(self):
        """Forget recorded requests and generate calls."""
        super().reset()
        self.generated.clear()
