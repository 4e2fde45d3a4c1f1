# Warnings and sanitizers for every target of this project.
# -Wno-format-truncation: paths are built with snprintf into PATH_MAX buffers;
# the data dir is capped at 3800 bytes (data.dir, checked again after
# realpath in cu_datadir_open), which leaves room for every name below it.
add_compile_options(-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
                    -Wformat=2 -Wno-format-nonliteral -Wno-format-truncation -Wvla
                    -Wpointer-arith)
if(CUSTOS_WERROR)
  add_compile_options(-Werror)
endif()
if(CUSTOS_SANITIZE)
  add_compile_options(-fsanitize=${CUSTOS_SANITIZE} -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${CUSTOS_SANITIZE})
endif()
