"""Every policy rule Ferry enforces, with its default.

Compute rules use Nova's names and Nova 32 (2025.2+) defaults (reference
section 2.9), including the base rules a policy file can refer to. Roles imply
each other (admin > manager > member > reader): tokens carry the implied roles,
so `role:member` also admits managers and admins. To add a rule: append a
`RuleDefault` to the right list; `ALL` is what the enforcer registers.
"""

from __future__ import annotations

from oslo_policy.policy import RuleDefault

ADMIN = "rule:context_is_admin"
PROJECT_MANAGER_OR_ADMIN = "rule:project_manager_or_admin"
PROJECT_MEMBER_OR_ADMIN = "rule:project_member_or_admin"
PROJECT_READER_OR_ADMIN = "rule:project_reader_or_admin"

BASE = [
    RuleDefault("context_is_admin", "role:admin",
                "Decides what is required for the 'is_admin:True' check to succeed."),
    RuleDefault("project_manager_api", "role:manager and project_id:%(project_id)s",
                "Project level management APIs."),
    RuleDefault("project_member_api", "role:member and project_id:%(project_id)s",
                "Project level non-admin APIs."),
    RuleDefault("project_reader_api", "role:reader and project_id:%(project_id)s",
                "Project level read-only APIs."),
    RuleDefault("project_manager_or_admin", "rule:project_manager_api or rule:context_is_admin",
                "Project manager or admin APIs."),
    RuleDefault("project_member_or_admin", "rule:project_member_api or rule:context_is_admin",
                "Project member or admin APIs."),
    RuleDefault("project_reader_or_admin", "rule:project_reader_api or rule:context_is_admin",
                "Project reader or admin APIs."),
    RuleDefault("service_api", "role:service", "Internal service calls (image reads by hosts)."),
    # Keystone's admin_required: identity administration.
    RuleDefault("admin_required", "role:admin", "Identity administration."),
]

_C = "os_compute_api:"
COMPUTE = [
    RuleDefault(_C + "servers:index", PROJECT_READER_OR_ADMIN, "List servers"),
    RuleDefault(_C + "servers:detail", PROJECT_READER_OR_ADMIN, "List servers with details"),
    RuleDefault(_C + "servers:index:get_all_tenants", ADMIN, "List servers of all projects"),
    RuleDefault(_C + "servers:detail:get_all_tenants", ADMIN,
                "List servers of all projects with details"),
    RuleDefault(_C + "servers:show", PROJECT_READER_OR_ADMIN, "Show a server"),
    RuleDefault(_C + "servers:show:host_status", ADMIN, "Show host_status (2.16+)"),
    RuleDefault(_C + "servers:show:flavor-extra-specs", PROJECT_READER_OR_ADMIN,
                "Show the flavor's extra specs in a server (2.47+)"),
    RuleDefault(_C + "servers:create", PROJECT_MEMBER_OR_ADMIN, "Create a server"),
    RuleDefault(_C + "servers:delete", PROJECT_MEMBER_OR_ADMIN, "Delete a server"),
    RuleDefault(_C + "servers:resize", PROJECT_MEMBER_OR_ADMIN, "Resize a server"),
    RuleDefault(_C + "servers:confirm_resize", PROJECT_MEMBER_OR_ADMIN,
                "Confirm a resize or cold migration"),
    RuleDefault(_C + "servers:revert_resize", PROJECT_MEMBER_OR_ADMIN,
                "Revert a resize or cold migration"),
    RuleDefault(_C + "servers:start", PROJECT_MEMBER_OR_ADMIN, "Start a server"),
    RuleDefault(_C + "servers:stop", PROJECT_MEMBER_OR_ADMIN, "Stop a server"),
    RuleDefault(_C + "os-migrate-server:migrate", PROJECT_MANAGER_OR_ADMIN,
                "Cold migrate a server, the scheduler choosing the host"),
    RuleDefault(_C + "os-migrate-server:migrate:host", ADMIN,
                "Cold migrate a server to a named host (2.56+)"),
    RuleDefault(_C + "os-migrations:index", PROJECT_MANAGER_OR_ADMIN,
                "List migrations without host info"),
    RuleDefault(_C + "os-migrations:index:all_projects", ADMIN,
                "List migrations of all projects or another project"),
    RuleDefault(_C + "os-migrations:index:host", ADMIN, "List migrations with host info"),
    RuleDefault(_C + "servers:migrations:index", PROJECT_MANAGER_OR_ADMIN,
                "List a server's in-progress live migrations"),
    RuleDefault(_C + "servers:migrations:show", ADMIN, "Show a server's live migration"),
    RuleDefault(_C + "os-extended-server-attributes", ADMIN,
                "Show OS-EXT-SRV-ATTR:* attributes of a server"),
    RuleDefault(_C + "os-console-output", PROJECT_MEMBER_OR_ADMIN, "Show console output"),
    RuleDefault(_C + "os-instance-actions:list", PROJECT_READER_OR_ADMIN,
                "List a server's actions"),
    RuleDefault(_C + "os-instance-actions:show", PROJECT_READER_OR_ADMIN,
                "Show a server's action"),
    RuleDefault(_C + "os-instance-actions:events", ADMIN,
                "Show the events of an action with tracebacks and hosts"),
    RuleDefault(_C + "os-instance-actions:events:details", ADMIN,
                "Show the details of action events"),
    RuleDefault(_C + "os-flavor-manage:create", ADMIN, "Create a flavor"),
    RuleDefault(_C + "os-flavor-manage:delete", ADMIN, "Delete a flavor"),
    RuleDefault(_C + "os-flavor-extra-specs:index", PROJECT_READER_OR_ADMIN,
                "List a flavor's extra specs"),
    RuleDefault(_C + "os-flavor-extra-specs:create", ADMIN, "Set a flavor's extra specs"),
    RuleDefault(_C + "os-hypervisors:list", ADMIN, "List hypervisors"),
    RuleDefault(_C + "os-hypervisors:list-detail", ADMIN, "List hypervisors with details"),
    RuleDefault(_C + "os-hypervisors:show", ADMIN, "Show a hypervisor"),
    RuleDefault(_C + "os-services:list", ADMIN, "List compute services"),
    RuleDefault(_C + "os-services:update", ADMIN,
                "Disable, enable or force down a compute service"),
]

# Glance-like. Visibility (public/community or the owner's project) is checked
# in code, as Glance does; these rules say who may call at all.
IMAGE = [
    RuleDefault("image:get_image", "role:reader or rule:service_api", "Show an image"),
    RuleDefault("image:get_images", "role:reader", "List images"),
    RuleDefault("image:download_image", "role:reader or rule:service_api",
                "Download image data"),
    RuleDefault("image:add_image", "role:member", "Create an image"),
    RuleDefault("image:upload_image",
                "rule:context_is_admin or (role:member and project_id:%(owner)s)",
                "Upload image data"),
    RuleDefault("image:delete_image",
                "rule:context_is_admin or (role:member and project_id:%(owner)s)",
                "Delete an image"),
    RuleDefault("image:publicize_image", "role:admin", "Create a public image"),
]

FERRY = [
    RuleDefault("ferry:migrations:index", PROJECT_READER_OR_ADMIN,
                "Ferry's migration view (phase, steps, bytes, downtime) of a project"),
    RuleDefault("ferry:migrations:index:all_projects", ADMIN,
                "Ferry's migration view of every project"),
    RuleDefault("ferry:migrations:show", PROJECT_READER_OR_ADMIN, "One migration's view"),
]

_OWN_USER = "user_id:%(target.user.id)s"
IDENTITY = [
    RuleDefault("identity:validate_token",
                "rule:admin_required or rule:service_api or user_id:%(target.token.user_id)s",
                "Validate (GET/HEAD) a token"),
    RuleDefault("identity:revoke_token",
                "rule:admin_required or user_id:%(target.token.user_id)s", "Revoke a token"),
    RuleDefault("identity:list_domains", "rule:admin_required", "List domains"),
    RuleDefault("identity:get_domain",
                "rule:admin_required or project_domain_id:%(target.domain.id)s or "
                "domain_id:%(target.domain.id)s", "Show a domain"),
    RuleDefault("identity:create_domain", "rule:admin_required", "Create a domain"),
    RuleDefault("identity:update_domain", "rule:admin_required", "Update a domain"),
    RuleDefault("identity:delete_domain", "rule:admin_required", "Delete a domain"),
    RuleDefault("identity:list_projects", "rule:admin_required", "List projects"),
    RuleDefault("identity:get_project",
                "rule:admin_required or project_id:%(target.project.id)s", "Show a project"),
    RuleDefault("identity:create_project", "rule:admin_required", "Create a project"),
    RuleDefault("identity:update_project", "rule:admin_required", "Update a project"),
    RuleDefault("identity:delete_project", "rule:admin_required", "Delete a project"),
    RuleDefault("identity:list_user_projects", "rule:admin_required or " + _OWN_USER,
                "List a user's projects"),
    RuleDefault("identity:list_users", "rule:admin_required", "List users"),
    RuleDefault("identity:get_user", "rule:admin_required or " + _OWN_USER, "Show a user"),
    RuleDefault("identity:create_user", "rule:admin_required", "Create a user"),
    RuleDefault("identity:update_user", "rule:admin_required", "Update a user"),
    RuleDefault("identity:delete_user", "rule:admin_required", "Delete a user"),
    RuleDefault("identity:change_password", "rule:admin_required or " + _OWN_USER,
                "Change one's own password"),
    RuleDefault("identity:list_roles", "rule:admin_required", "List roles"),
    RuleDefault("identity:get_role", "rule:admin_required", "Show a role"),
    RuleDefault("identity:create_role", "rule:admin_required", "Create a role"),
    RuleDefault("identity:delete_role", "rule:admin_required", "Delete a role"),
    RuleDefault("identity:check_grant", "rule:admin_required", "Check a role assignment"),
    RuleDefault("identity:list_grants", "rule:admin_required", "List role assignments"),
    RuleDefault("identity:create_grant", "rule:admin_required", "Grant a role"),
    RuleDefault("identity:revoke_grant", "rule:admin_required", "Revoke a role"),
    RuleDefault("identity:list_role_assignments", "rule:admin_required",
                "List role assignments"),
]

ALL = [*BASE, *COMPUTE, *IMAGE, *FERRY, *IDENTITY]
