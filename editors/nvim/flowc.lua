-- Neovim: `.flow` files get the filetype `flow` and `flowc lsp` as their
-- language server. Put this in your init.lua (or source it); `flowc` must be
-- on PATH, or set FLOWC to its path. Works with Neovim 0.7 and later.
local flowc = os.getenv('FLOWC') or 'flowc'

vim.api.nvim_create_autocmd({ 'BufRead', 'BufNewFile' }, {
  pattern = '*.flow',
  callback = function() vim.bo.filetype = 'flow' end,
})

vim.api.nvim_create_autocmd('FileType', {
  pattern = 'flow',
  callback = function(args)
    local config = {
      name = 'flowc',
      cmd = { flowc, 'lsp' },
      root_dir = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(args.buf), ':p:h'),
      init_options = { inlayHints = true },
    }
    if vim.lsp.start then -- Neovim 0.8 and later
      vim.lsp.start(config, { bufnr = args.buf })
    else
      vim.lsp.buf_attach_client(args.buf, vim.lsp.start_client(config))
    end
    -- Keys, in this buffer only (Neovim 0.10 maps some of them itself).
    local map = function(lhs, fn) vim.keymap.set('n', lhs, fn, { buffer = args.buf }) end
    map('K', vim.lsp.buf.hover)
    map('gd', vim.lsp.buf.definition)
    map('gr', vim.lsp.buf.references)
    map('<leader>f', function()
      if vim.lsp.buf.format then vim.lsp.buf.format() else vim.lsp.buf.formatting_sync() end
    end)
  end,
})
