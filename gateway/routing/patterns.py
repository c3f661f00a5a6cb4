"""Wildcard model names (LiteLLM's `model_name: "anthropic/*"` or `"*"`) and what a caller may reach.

A pattern's `*` matches any text. A requested name that no exact group or alias takes is served by
the most specific pattern that matches it (the most literal characters, then the fewest `*`), and the
pattern deployment's `litellm_params.model` gets the matched text in place of its own `*`s: model
`openai/*` behind `model_name: "*"` sends `gpt-4o` to OpenAI for a request of `gpt-4o`.

`Reach` answers "may this caller reach group X" for a key's `models` list, which may hold group
names, patterns and access groups (`model_info.access_groups`)."""

import re

# Names in a `models` list that allow every model (LiteLLM's special names; "all-team-models" means
# what the level above allows and is read as "no limit of its own" where levels are combined).
ALL_MODELS = frozenset({"*", "all-proxy-models"})
ALL_TEAM_MODELS = "all-team-models"
MAX_NAME = 256
# Text a requested name may not carry into a pattern deployment's model: a URL (some providers read
# one as their address), whitespace and control characters.
_UNSAFE = re.compile(r"://|[\s\x00-\x1f\x7f]")


def is_pattern(name):
    """Whether a model name is a wildcard pattern."""
    return isinstance(name, str) and "*" in name


def specificity(name):
    """Sort key of patterns, most specific first: more literal characters, then fewer `*`."""
    return (-(len(name) - name.count("*")), name.count("*"), name)


class Pattern:
    """One wildcard name, compiled once."""

    __slots__ = ("name", "regex")

    def __init__(self, name):
        self.name = name
        self.regex = re.compile(re.escape(name).replace(r"\*", "(.*)"), re.DOTALL)

    def segments(self, requested):
        """The texts the `*`s matched in `requested` (None: no match; an empty match is none)."""
        found = self.regex.fullmatch(requested)
        if found is None or not all(found.groups()):
            return None
        return found.groups()

    def covers(self, name):
        """Whether every name `name` stands for (itself, or what a pattern `name` matches) matches
        this pattern: the regex's `.*` absorbs any `*` of `name`, so a literal match is enough."""
        return self.regex.fullmatch(name) is not None


def servable(requested):
    """Whether a requested name may be served by a pattern at all: bounded, no `*` (a pattern's own
    name is listed by /models but never sent upstream), no URL, no whitespace or control characters."""
    return (isinstance(requested, str) and 0 < len(requested) <= MAX_NAME and "*" not in requested
            and _UNSAFE.search(requested) is None)


def fill(model, segments):
    """The concrete model string of a pattern deployment for one name: each `*` of `model` takes the
    next matched segment (config load checks that a pattern model has as many `*` as its name, or none)."""
    for segment in segments:
        model = model.replace("*", segment, 1)
    return model


class Reach:
    """The groups a caller limited to a `models` list may reach: the groups it names, the groups the
    aliases it names point to, the members of the access groups it names, and every name matching a
    pattern it names (or a pattern group its access groups hold)."""

    __slots__ = ("names", "patterns", "via", "pattern_of")

    def __init__(self, names, patterns, via, pattern_of):
        self.names = frozenset(names)
        self.patterns = tuple(Pattern(p) for p in patterns)
        self.via = frozenset(via)  # the router's pattern names reached through access groups
        self.pattern_of = pattern_of  # the router's: a name -> the pattern serving it (or None)

    def __contains__(self, name):
        if name in self.names or name in self.via:
            return True
        if not isinstance(name, str):
            return False
        if any(p.covers(name) for p in self.patterns):
            return True
        return bool(self.via) and self.pattern_of(name) in self.via

    def __repr__(self):
        return f"Reach({sorted(self.names)}, {[p.name for p in self.patterns]}, {sorted(self.via)})"


def admits(entries, name):
    """Whether a `models` list (names and patterns, access groups already expanded) allows `name`,
    itself a name or a pattern (a pattern is allowed when all it matches is)."""
    if name in entries:
        return True
    return any(is_pattern(e) and Pattern(e).covers(name) for e in entries)
