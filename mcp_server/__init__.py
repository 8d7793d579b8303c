"""The MCP server (tools, resources, prompts) and the cluster gateway. Arrives with issue 4."""

__all__: list[str] = []
