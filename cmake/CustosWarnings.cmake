# Warnings and sanitizers for every target of this project.
add_compile_options(-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
                    -Wformat=2 -Wno-format-nonliteral -Wvla -Wpointer-arith)
if(CUSTOS_WERROR)
  add_compile_options(-Werror)
endif()
if(CUSTOS_SANITIZE)
  add_compile_options(-fsanitize=${CUSTOS_SANITIZE} -fno-omit-frame-pointer
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${CUSTOS_SANITIZE})
endif()
