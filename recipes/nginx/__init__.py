"""nginx recipe: an HTTPS static site or reverse proxy with a generated certificate (docs/nginx.md).

* :class:`NginxInputs`: what to set up; :class:`NginxRecipe`: the recipe (registered as ``nginx``);
* ``polyvm nginx`` and ``polyvm apply --recipe nginx`` on the command line; ``RecipeResource(recipe="nginx")``
  in Pulumi; ``polyvm sandbox up --recipe nginx`` on this machine.
"""

from .recipe import NginxInputs, NginxRecipe, build_steps, render_site

__all__ = ["NginxInputs", "NginxRecipe", "build_steps", "render_site"]
