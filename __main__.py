"""Reads this stack's config and declares the serverless ASM gateway stack."""

import pulumi

import stack_config
from components.stack import ServerlessGateway

config = stack_config.load()
stack = ServerlessGateway("asm-gateway", config.gateway, stack_config.provider_options(config, "asm-gateway"))

pulumi.export("nodePoolId", stack.node_pool_id)
pulumi.export("nodeNames", stack.node_names)
pulumi.export("virtualNodeMode", stack.virtual_node_mode)
pulumi.export("meshId", stack.mesh_id)
pulumi.export("gateways", stack.gateways)
