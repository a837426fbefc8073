"""Test support: real servers, a fake OpenAI upstream, in-process service stacks."""
