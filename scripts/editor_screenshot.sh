#!/usr/bin/env bash
# The README's screenshot: Neovim, configured by editors/nvim/flowc.lua,
# showing flowc's diagnostics of tests/bad/many_errors_mixed.flow, in xterm
# under Xvfb, captured with ImageMagick. Needs (Debian) neovim xvfb xterm
# imagemagick fonts-dejavu-core, and a built flowc.
set -euo pipefail
export PATH="/usr/bin:$PATH" # ImageMagick's convert and import
root="$(cd "$(dirname "$0")/.." && pwd)"
flowc="${FLOWC:-$root/target/release/flowc}"
work="$(mktemp -d)"
sed 1d "$root/tests/bad/many_errors_mixed.flow" > "$work/mixed.flow" # without `# expect:`
cat > "$work/shot.lua" <<'LUA'
vim.cmd('highlight NormalFloat ctermbg=236 ctermfg=252')
vim.cmd('set number')
vim.api.nvim_win_set_cursor(0, { 5, 8 })
vim.defer_fn(function()
  vim.diagnostic.open_float({
    header = 'flowc:',
    format = function(d)
      local code = d.code or (d.user_data and d.user_data.lsp and d.user_data.lsp.code)
      return string.format('%s [%s]', d.message, code)
    end,
  })
end, 1500)
LUA
Xvfb :99 -screen 0 1200x500x24 >/dev/null 2>&1 & xvfb=$!
sleep 1
cd "$work"
DISPLAY=:99 FLOWC="$flowc" xterm -geometry 118x14+0+0 -fa 'DejaVu Sans Mono' -fs 12 \
  -bg '#1e1e1e' -fg '#d4d4d4' -e nvim -n -i NONE -u "$root/editors/nvim/flowc.lua" \
  -c "luafile $work/shot.lua" mixed.flow & term=$!
sleep 4
DISPLAY=:99 import -window root "$work/full.png"
convert "$work/full.png" -crop 1180x290+0+0 +repage "$root/docs/editor-diagnostics.png"
kill "$term" "$xvfb"
rm -rf "$work"
