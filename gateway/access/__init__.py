"""Who is calling and what they may do: authentication, the route policy, virtual keys, key rules."""
